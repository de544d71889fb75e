package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFilesOnlyRootCanChangeWhenRunningAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("ownership is only enforced when running as root")
	}
	key, err := os.ReadFile(filepath.Join("testdata", "keys", "a.pub"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{
			name:  "world-writable key is refused",
			setup: func(t *testing.T, dir string) { chmod(t, filepath.Join(dir, "ci.pub"), 0o666) },
			want:  "ci.pub: writable by group or others (mode 0666): refused; chmod go-w it",
		},
		{
			name:  "group-writable policy file is refused",
			setup: func(t *testing.T, dir string) { chmod(t, filepath.Join(dir, "10-p.yaml"), 0o664) },
			want:  "10-p.yaml: cannot read this file: writable by group or others (mode 0664): refused; chmod go-w it",
		},
		{
			name: "key owned by another user is refused",
			setup: func(t *testing.T, dir string) {
				if err := os.Chown(filepath.Join(dir, "ci.pub"), 1000, 1000); err != nil {
					t.Fatal(err)
				}
			},
			want: "ci.pub: owned by uid 1000, not root: refused; chown root it",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "ci.pub"), string(key))
			writeFile(t, filepath.Join(dir, "10-p.yaml"), "signers:\n  - name: ci\n    key: ci.pub\nrules:\n  - name: r\n    images: [\"x.io/**\"]\n    signatures: {threshold: 1, signers: [ci]}\n")
			if _, err := Load(dir); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			tt.setup(t, dir)
			_, err := Load(dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
