package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/push"
	"github.com/urfave/cli/v2"
)

// One-shot commands run from cron live too briefly to be scraped: with
// --metrics-push they push their metrics to a Prometheus Pushgateway when
// they are done.

// pushTimeout bounds a push, so an unreachable gateway does not hold up
// the cron job.
const pushTimeout = 10 * time.Second

func metricsPushFlag() cli.Flag {
	return &cli.StringFlag{Name: "metrics-push", EnvVars: []string{"SNAP_METRICS_PUSH"},
		Usage: "when done, push metrics to the Prometheus Pushgateway at `URL` (like http://pushgateway:9091), grouped by job=\"snap\", host and command; a failed push only warns"}
}

// parseMetricsPush returns --metrics-push, checked: a URL that can never
// work is a usage error.
func parseMetricsPush(c *cli.Context) (string, error) {
	s := c.String("metrics-push")
	if s == "" {
		return "", nil
	}
	u, err := url.Parse(s)
	if err == nil && (u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.Hostname() == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil) {
		err = fmt.Errorf("want http:// or https://, a host, no query")
	}
	if err != nil {
		return "", cli.Exit(fmt.Sprintf("--metrics-push %q: %v: give the Pushgateway's URL, like http://pushgateway:9091", s, err), exitUsage)
	}
	return strings.TrimSuffix(s, "/"), nil
}

// push sends m to the Pushgateway at gateway (nothing if it is empty)
// under job "snap" and the grouping labels, given as name, value pairs.
// It uses POST: the series this push carries replace those of the same
// name in the group, and the others stay, so a failed backup (which has
// no new success time) leaves the last success time in place. A failure
// is only logged: metrics do not fail the work they describe.
func (m *metrics) push(ctx context.Context, gateway string, log *slog.Logger, grouping ...string) {
	if gateway == "" || m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pushTimeout)
	defer cancel()
	p := push.New(gateway, "snap").Gatherer(m.reg).Client(&http.Client{Timeout: pushTimeout})
	for i := 0; i+1 < len(grouping); i += 2 {
		p = p.Grouping(grouping[i], grouping[i+1])
	}
	if err := p.AddContext(ctx); err != nil {
		log.Warn("--metrics-push: metrics not pushed; the command's result stands", "url", gateway, "err", err)
		return
	}
	log.Debug("metrics pushed", "url", gateway)
}
