package gcs_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// faults sits in front of the emulator and fails a fraction of requests
// the ways GCS and networks do: 503 and 429 answers, reset connections,
// requests that hang, downloads cut short. Every fault but the last is
// injected before the request reaches the emulator: one injected after a
// write was forwarded would leave the emulator in a state GCS cannot be in.
// A download cut short is safe after forwarding, since reads change
// nothing.
type faults struct {
	next http.Handler
	stop chan struct{} // closed at cleanup: stalled requests end

	mu    sync.Mutex
	rng   *rand.Rand
	rate  float64 // fraction of requests to fail
	kinds map[string]int
	total int

	stalls atomic.Int64 // requests hanging now
}

// faultKinds are the faults and their weights.
var faultKinds = []struct {
	name   string
	weight int
}{
	{"503", 30}, {"429", 15}, {"500", 5}, {"reset", 25}, {"stall", 10}, {"truncate", 15},
}

func newFaults(next http.Handler, rate float64, seed uint64) *faults {
	return &faults{next: next, stop: make(chan struct{}), rng: rand.New(rand.NewPCG(seed, seed)), rate: rate, kinds: map[string]int{}}
}

func (f *faults) setRate(rate float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rate = rate
}

// pick counts a request and decides its fault ("" for none).
func (f *faults) pick(download bool) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.total++
	if f.rng.Float64() >= f.rate {
		return ""
	}
	sum := 0
	for _, k := range faultKinds {
		sum += k.weight
	}
	n := f.rng.IntN(sum)
	kind := ""
	for _, k := range faultKinds {
		if n < k.weight {
			kind = k.name
			break
		}
		n -= k.weight
	}
	if kind == "truncate" && !download {
		kind = "503"
	}
	f.kinds[kind]++
	return kind
}

// stats returns how many requests came and how many failed, by kind.
func (f *faults) stats() (total, failed int, kinds string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var parts []string
	for k, n := range f.kinds {
		failed += n
		parts = append(parts, fmt.Sprintf("%s:%d", k, n))
	}
	sort.Strings(parts)
	return f.total, failed, strings.Join(parts, " ")
}

func isDownload(r *http.Request) bool {
	return r.Method == http.MethodGet && (r.URL.Query().Get("alt") == "media" || strings.HasPrefix(r.URL.Path, "/download/"))
}

func (f *faults) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch f.pick(isDownload(r)) {
	case "":
		f.next.ServeHTTP(w, r)
	case "503":
		writeError(w, http.StatusServiceUnavailable)
	case "429":
		writeError(w, http.StatusTooManyRequests)
	case "500":
		writeError(w, http.StatusInternalServerError)
	case "reset":
		// RST, not FIN: what a dying load balancer does.
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		conn.Close()
	case "stall":
		// Take the request, answer nothing until the client gives up.
		f.stalls.Add(1)
		defer f.stalls.Add(-1)
		buf := make([]byte, 32<<10)
		for {
			if _, err := r.Body.Read(buf); err != nil {
				break
			}
		}
		select {
		case <-r.Context().Done():
		case <-f.stop:
		case <-time.After(time.Minute):
		}
		panic(http.ErrAbortHandler)
	case "truncate":
		rec := httptest.NewRecorder()
		f.next.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		if rec.Code/100 != 2 || len(body) < 2 {
			writeError(w, http.StatusServiceUnavailable)
			return
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(rec.Code)
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection drops mid-body
	}
}
