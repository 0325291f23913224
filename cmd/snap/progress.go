package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/snapbackup/snap/snapshot"
)

// progressLine redraws one status line on a terminal until stopped. When
// the output is not a terminal it prints nothing: logs stay quiet.
type progressLine struct {
	w     io.Writer
	p     *snapshot.Progress
	verb  string
	start time.Time
	stop  chan struct{}
	done  sync.WaitGroup
}

func startProgress(w io.Writer, enabled bool, verb string, p *snapshot.Progress) *progressLine {
	pl := &progressLine{w: w, p: p, verb: verb, start: time.Now(), stop: make(chan struct{})}
	if !enabled {
		return pl
	}
	pl.done.Add(1)
	go func() {
		defer pl.done.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				fmt.Fprintf(pl.w, "\r\033[K%s", pl.line())
			case <-pl.stop:
				fmt.Fprint(pl.w, "\r\033[K")
				return
			}
		}
	}()
	return pl
}

func (pl *progressLine) line() string {
	done, total := pl.p.BytesDone.Load(), pl.p.BytesTotal.Load()
	el := time.Since(pl.start).Seconds()
	rate := float64(done) / max(el, 1e-3)
	eta := "-"
	if rate > 0 && total > done {
		eta = time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	return fmt.Sprintf("%s files %d/%d  %s / %s  %s/s  ETA %s", pl.verb,
		pl.p.FilesDone.Load(), pl.p.FilesTotal.Load(), bytesStr(done), bytesStr(total), bytesStr(int64(rate)), eta)
}

func (pl *progressLine) Stop() {
	select {
	case <-pl.stop:
	default:
		close(pl.stop)
	}
	pl.done.Wait()
}

// bytesStr formats a byte count with binary units.
func bytesStr(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
