package e2e

import (
	"fmt"
	"os"

	"github.com/imagegate/imagegate/test/e2eutil"
)

// NewImagegate writes the daemon config of an imagegate under dir that
// serves containerd c with the policy in policyDir.
func NewImagegate(bin, dir, policyDir string, c *Containerd) (*e2eutil.Imagegate, error) {
	g, err := e2eutil.NewImagegate("imagegate", "NRI", bin, dir)
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`policyDir: %s
runtime: containerd
nri:
  socket: %s
containerd:
  address: %s
metrics:
  listen: %s
log:
  level: debug
`, policyDir, c.NRISocket, c.Socket, g.Metrics)
	return g, os.WriteFile(g.Config, []byte(cfg), 0o644)
}
