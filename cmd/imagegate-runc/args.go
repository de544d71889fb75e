package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// invocation is what the guard needs to know of a runc command line.
type invocation struct {
	command   string
	id        string
	log       string
	logFormat string
}

// guarded reports whether the command creates a container from a bundle:
// create, run (create and start) and restore (create from a checkpoint).
func (inv invocation) guarded() bool {
	switch inv.command {
	case "create", "run", "restore":
		return true
	}
	return false
}

// runc's global flags that take a value (runc 1.1–1.4); the others are
// booleans (--debug, --systemd-cgroup, --help, --version).
var globalValueFlags = map[string]bool{"log": true, "log-format": true, "root": true, "criu": true, "rootless": true}

// The value flags of create, run and restore. An unknown flag is taken
// for a boolean: the container ID is the LAST positional argument, so a
// value taken for a positional before it changes nothing, and containerd
// and dockerd put the ID last.
var commandValueFlags = map[string]bool{
	"bundle": true, "b": true, "config": true, "console-socket": true, "pidfd-socket": true,
	"pid-file": true, "preserve-fds": true,
	"image-path": true, "work-path": true, "parent-path": true, "manage-cgroups-mode": true,
	"empty-ns": true, "lsm-profile": true, "lsm-mount-context": true,
}

var commands = map[string]bool{
	"checkpoint": true, "create": true, "delete": true, "events": true, "exec": true, "features": true,
	"help": true, "h": true, "init": true, "kill": true, "list": true, "pause": true, "ps": true,
	"restore": true, "resume": true, "run": true, "spec": true, "start": true, "state": true, "update": true,
}

// parseArgs reads a runc command line (without argv[0]) as runc's flag
// parser does: global flags, the command, its flags and arguments. Flags
// are written -f, --f, with "=value" or the value as the next argument.
//
// The command is the first positional argument that names a runc command:
// a positional before it is either the value of a global flag newer than
// this list, or an error runc reports itself. Either way, a create is
// never mistaken for something that is passed through.
func parseArgs(args []string) invocation {
	var inv invocation
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		name, value, hasValue, isFlag := flag(a)
		if !isFlag {
			if commands[a] {
				inv.command = a
				i++
				break
			}
			continue
		}
		if globalValueFlags[name] && !hasValue && i+1 < len(args) {
			i++
			value = args[i]
		}
		switch name {
		case "log":
			inv.log = value
		case "log-format":
			inv.logFormat = value
		}
	}
	if inv.command == "" {
		// After "--" runc takes the next argument for the command.
		if i < len(args) && commands[args[i]] {
			inv.command = args[i]
			i++
		} else {
			return inv
		}
	}
	if !inv.guarded() {
		return inv
	}
	positional := false
	for ; i < len(args); i++ {
		a := args[i]
		if positional {
			inv.id = a
			continue
		}
		if a == "--" {
			positional = true
			continue
		}
		name, _, hasValue, isFlag := flag(a)
		if !isFlag {
			inv.id = a
			continue
		}
		if commandValueFlags[name] && !hasValue {
			i++
		}
	}
	return inv
}

// flag splits "-name", "--name" or "--name=value".
func flag(a string) (name, value string, hasValue, ok bool) {
	if len(a) < 2 || a[0] != '-' {
		return "", "", false, false
	}
	name = strings.TrimPrefix(a[1:], "-")
	name, value, hasValue = strings.Cut(name, "=")
	return name, value, hasValue, name != ""
}

// config is the part of imagegate's daemon config the guard reads.
type config struct {
	socket string
	runc   string
}

// readConfig reads guard.socket and guard.runc from the daemon config at
// path; an absent file means the defaults. It is a line reader, not YAML:
// it understands the block form the documentation and the packaged file
// use,
//
//	guard:
//	  socket: /run/imagegate/guard.sock
//	  runc: /usr/bin/runc
//
// with optional quotes and trailing comments, and nothing else (no flow
// mappings, anchors or multi-line scalars) — imagegate itself parses the
// same file fully and is the one that reports its errors.
func readConfig(path string) (config, error) {
	cfg := config{socket: defaultSocket, runc: defaultRunc}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	inGuard := false
	guardIndent := -1
	for line := 1; sc.Scan(); line++ {
		text := stripComment(sc.Text())
		if strings.TrimSpace(text) == "" {
			continue
		}
		indent := len(text) - len(strings.TrimLeft(text, " \t"))
		key, value, ok := strings.Cut(strings.TrimSpace(text), ":")
		key = strings.TrimSpace(key)
		if indent == 0 {
			inGuard = ok && key == "guard"
			guardIndent = -1
			if inGuard && strings.TrimSpace(value) != "" {
				return cfg, fmt.Errorf("%s:%d: guard: write its keys on their own lines", path, line)
			}
			continue
		}
		if !inGuard || !ok {
			continue
		}
		if guardIndent < 0 {
			guardIndent = indent
		}
		if indent != guardIndent {
			continue
		}
		v, err := unquote(strings.TrimSpace(value))
		if err != nil {
			return cfg, fmt.Errorf("%s:%d: guard.%s: %v", path, line, key, err)
		}
		switch key {
		case "socket":
			cfg.socket = v
		case "runc":
			cfg.runc = v
		default:
			continue
		}
		if v == "" {
			return cfg, fmt.Errorf("%s:%d: guard.%s must not be empty", path, line, key)
		}
	}
	if err := sc.Err(); err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// stripComment drops a "#" comment: one at the start of a line or after
// whitespace, outside quotes.
func stripComment(s string) string {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#' && (i == 0 || s[i-1] == ' ' || s[i-1] == '\t'):
			return s[:i]
		}
	}
	return s
}

func unquote(v string) (string, error) {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') {
		if v[len(v)-1] != v[0] {
			return "", errors.New("unterminated quote")
		}
		inner := v[1 : len(v)-1]
		if v[0] == '"' && strings.ContainsRune(inner, '\\') {
			return "", errors.New("escapes in double quotes are not supported here")
		}
		return inner, nil
	}
	if v != "" && (v[0] == '"' || v[0] == '\'') {
		return "", errors.New("unterminated quote")
	}
	if v == "null" || v == "~" {
		return "", nil
	}
	return v, nil
}
