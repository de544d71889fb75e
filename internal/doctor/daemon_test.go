package doctor

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCheckDaemon(t *testing.T) {
	serve := func(body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte(body))
		}))
		t.Cleanup(srv.Close)
		return strings.TrimPrefix(srv.URL, "http://")
	}
	const gauge = "# HELP imagegate_nri_connected 1 while registered.\n# TYPE imagegate_nri_connected gauge\nimagegate_nri_connected "
	connected, disconnected := serve(gauge+"1\n"), serve(gauge+"0\n")
	other := serve("# TYPE up gauge\nup 1\n")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()

	tests := []struct {
		name, listen, want string
	}{
		{"connected daemon passes", connected, "OK  imagegate runs and is connected to the runtime's NRI (http://" + connected + "/metrics)"},
		{"disconnected daemon fails", disconnected, "FAIL imagegate daemon: imagegate runs but is not connected to the runtime's NRI socket: containers are not checked by it now; see journalctl -u imagegate"},
		{"another endpoint fails", other, "FAIL imagegate daemon: http://" + other + "/metrics has no imagegate_nri_connected: is that imagegate's metrics endpoint?"},
		{"no daemon fails", down, "FAIL imagegate daemon: no answer on http://" + down + "/metrics ("},
		{"metrics disabled warns", "", "WARN imagegate daemon: cannot tell whether imagegate runs and is connected: metrics.listen is empty in its config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkDaemon(context.Background(), tt.listen).String()
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}
