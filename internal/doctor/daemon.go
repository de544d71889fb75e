package doctor

import (
	"context"
	"net/http"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// checkDaemon asks the running imagegate, through its metrics endpoint,
// whether it is connected to the runtime's NRI now: a node can be set up
// right and still be unprotected because the daemon is down or cannot
// register.
func checkDaemon(ctx context.Context, listen string) Result {
	const check = "imagegate daemon"
	if listen == "" {
		return warn(check, "cannot tell whether imagegate runs and is connected: metrics.listen is empty in its config")
	}
	url := "http://" + listen + "/metrics"
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fail(check, "metrics.listen %q: %v", listen, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fail(check, "no answer on %s (%v): start imagegate (systemctl start imagegate)", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fail(check, "%s answers %s: is that imagegate's metrics endpoint?", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return fail(check, "%s: unreadable metrics: %v", url, err)
	}
	mf := families["imagegate_nri_connected"]
	if mf == nil || len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetGauge() == nil {
		return fail(check, "%s has no imagegate_nri_connected: is that imagegate's metrics endpoint?", url)
	}
	if mf.GetMetric()[0].GetGauge().GetValue() != 1 {
		return fail(check, "imagegate runs but is not connected to the runtime's NRI socket: "+
			"containers are not checked by it now; see journalctl -u imagegate")
	}
	return ok("imagegate runs and is connected to the runtime's NRI (%s)", url)
}
