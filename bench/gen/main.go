// Command gen writes realistic key-value records for the benchmark's RocksDB
// data set (bench/run.sh): with -addr straight to a server as pipelined
// MSET commands (redis-cli --pipe needs ECHO, which the test server does
// not have), or to stdout as Redis-protocol commands or as "key ==> value"
// lines for `ldb load`.
//
// Values are JSON-like records: ids, a UUID, timestamps, enumerated fields,
// numbers, tags, a nested attribute map and a payload of random bytes in
// base64 whose length varies per record. db_bench draws every value from
// one 1 MiB random pool, which a large-window compressor squeezes to a
// fraction; these records compress about as much as application data does
// (snappy inside the SSTs takes the structure, zstd a little more).
//
// The output depends only on the flags: the same -seed and -first give the
// same records, and keys are unique across runs whose [-first, -first+n)
// ranges do not overlap.
package main

import (
	"bufio"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("gen", flag.ContinueOnError)
	bytes := fl.Int64("bytes", 64<<20, "stop after about this many bytes of keys and values")
	first := fl.Uint64("first", 0, "number of the first record (keys are derived from it)")
	seed := fl.Uint64("seed", 1, "random seed")
	batch := fl.Int("batch", 64, "records per MSET command")
	format := fl.String("format", "resp", "resp (MSET commands for redis-cli --pipe) or ldb (lines for ldb load)")
	payload := fl.Int("payload", 400, "mean payload size in random bytes before base64")
	values := fl.String("values", "json", "json (JSON-like records) or random (random bytes of 512 to 1535 bytes: the incompressible shape)")
	stats := fl.String("stats", "", "write \"records=N bytes=B next=M\" to this file at the end")
	addr := fl.String("addr", "", "send the records to the server at this `host:port` instead of stdout")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *addr != "" && *format != "resp" {
		return fmt.Errorf("-addr sends Redis-protocol commands; -format must be resp")
	}
	if *batch < 1 || *bytes < 0 || *payload < 0 {
		return fmt.Errorf("-batch must be positive, -bytes and -payload not negative")
	}
	if *values != "json" && *values != "random" {
		return fmt.Errorf("-values %q: want json or random", *values)
	}
	if *values == "random" && *format == "ldb" {
		return fmt.Errorf("-values random is binary: send it with -addr or as -format resp")
	}
	if *format != "resp" && *format != "ldb" {
		return fmt.Errorf("-format %q: want resp or ldb", *format)
	}
	out := stdout
	var replies chan error
	if *addr != "" {
		conn, err := net.Dial("tcp", *addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		out = conn
		replies = make(chan error, 1)
		go func() { replies <- readReplies(bufio.NewReader(conn)) }()
	}
	w := bufio.NewWriterSize(out, 1<<20)
	g := newGen(*seed, *first, *payload)
	g.random = *values == "random"
	var written int64
	keys := make([][]byte, 0, *batch)
	vals := make([][]byte, 0, *batch)
	for written < *bytes {
		keys, vals = keys[:0], vals[:0]
		for len(keys) < *batch && written < *bytes {
			k, v := g.next()
			keys = append(keys, k)
			vals = append(vals, v)
			written += int64(len(k) + len(v))
		}
		if *format == "ldb" {
			for i := range keys {
				w.Write(keys[i])
				w.WriteString(" ==> ")
				w.Write(vals[i])
				w.WriteByte('\n')
			}
			continue
		}
		w.WriteString("*" + strconv.Itoa(1+2*len(keys)) + "\r\n$4\r\nMSET\r\n")
		for i := range keys {
			writeBulk(w, keys[i])
			writeBulk(w, vals[i])
		}
	}
	if replies != nil {
		w.WriteString("*1\r\n$4\r\nPING\r\n") // its PONG is the last reply
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if replies != nil {
		if err := <-replies; err != nil {
			return fmt.Errorf("server at %s: %w", *addr, err)
		}
	}
	if *stats != "" {
		line := fmt.Sprintf("records=%d bytes=%d next=%d\n", g.n-*first, written, g.n)
		return os.WriteFile(*stats, []byte(line), 0o644)
	}
	return nil
}

// readReplies reads +OK replies until +PONG; any other reply is an error.
func readReplies(r *bufio.Reader) error {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		switch line = strings.TrimRight(line, "\r\n"); line {
		case "+OK":
		case "+PONG":
			return nil
		default:
			return errors.New(line)
		}
	}
}

func writeBulk(w *bufio.Writer, b []byte) {
	w.WriteByte('$')
	w.WriteString(strconv.Itoa(len(b)))
	w.WriteString("\r\n")
	w.Write(b)
	w.WriteString("\r\n")
}

var (
	eventTypes = []string{"order.created", "order.updated", "order.paid", "order.shipped", "order.cancelled",
		"user.login", "user.logout", "user.signup", "user.profile_updated", "cart.item_added",
		"cart.item_removed", "page.view", "search.query", "payment.authorized", "payment.failed",
		"session.heartbeat", "message.sent", "message.read", "invoice.issued", "refund.requested"}
	statuses   = []string{"pending", "active", "completed", "failed", "cancelled", "on_hold"}
	countries  = []string{"US", "DE", "FR", "GB", "NL", "SE", "PL", "ES", "IT", "BR", "IN", "JP", "KR", "CN", "CA", "AU", "MX", "AR", "ZA", "NG", "EG", "TR", "RU", "UA", "CH", "AT", "BE", "DK", "NO", "FI"}
	currencies = []string{"USD", "EUR", "GBP", "JPY", "BRL", "INR", "CHF", "SEK"}
	langs      = []string{"en", "de", "fr", "es", "it", "pt", "ja", "ko", "zh", "pl", "nl", "sv"}
	agents     = []string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
		"Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
		"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
		"okhttp/4.12.0", "curl/8.11.0", "python-requests/2.32.3", "Go-http-client/2.0", "snap-sdk/1.4.2 (ios)"}
	words = []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
		"kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform",
		"victor", "whiskey", "xray", "yankee", "zulu", "red", "green", "blue", "amber", "priority", "bulk",
		"retry", "mobile", "web", "api", "beta", "trial", "vip", "internal", "promo", "gift", "express",
		"standard", "eu", "us", "apac", "latam", "legacy", "migrated"}
	attrKeys = []string{"campaign", "referrer", "device", "os", "screen", "plan", "cohort", "experiment",
		"variant", "region", "zone", "shard", "build", "sdk", "channel", "source", "medium", "score",
		"latency_ms", "retries", "items", "weight_g", "discount", "coupon"}
)

type gen struct {
	rnd     *rand.Rand
	n       uint64
	ts      time.Time
	payload float64
	buf     []byte
	raw     []byte
	random  bool // values are random bytes, not records
}

func newGen(seed, first uint64, payload int) *gen {
	return &gen{
		// Records do not depend on -first except for their number, so
		// runs with different ranges share a seed safely.
		rnd:     rand.New(rand.NewPCG(seed, first^0x9e3779b97f4a7c15)),
		n:       first,
		ts:      time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(first) * 40 * time.Millisecond),
		payload: float64(payload),
	}
}

// mix is splitmix64's finalizer: a bijection, so distinct record numbers
// give distinct keys spread over the key space, as hashed ids are.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func (g *gen) pick(s []string) string { return s[g.rnd.IntN(len(s))] }

// skewed picks from s with a Zipf-like bias towards the first entries.
func (g *gen) skewed(s []string) string {
	i := int(float64(len(s)) * math.Pow(g.rnd.Float64(), 2.5))
	return s[min(i, len(s)-1)]
}

func (g *gen) next() (key, value []byte) {
	r := g.rnd
	n := g.n
	g.n++
	g.ts = g.ts.Add(time.Duration(1+r.IntN(80)) * time.Millisecond)
	key = fmt.Appendf(nil, "evt:%016x", mix(n))
	if g.random {
		v := make([]byte, 512+r.IntN(1024))
		for i := 0; i < len(v); i += 8 {
			x := r.Uint64()
			for j := i; j < min(i+8, len(v)); j++ {
				v[j] = byte(x)
				x >>= 8
			}
		}
		return key, v
	}

	b := g.buf[:0]
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, n, 10)
	b = fmt.Appendf(b, `,"uuid":"%08x-%04x-4%03x-%04x-%012x"`, r.Uint32(), r.Uint32()&0xffff,
		r.Uint32()&0xfff, 0x8000|r.Uint32()&0x3fff, r.Uint64()&0xffffffffffff)
	b = append(b, `,"ts":"`...)
	b = g.ts.AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = append(b, `","created_ms":`...)
	b = strconv.AppendInt(b, g.ts.Add(-time.Duration(r.IntN(3600000))*time.Millisecond).UnixMilli(), 10)
	b = append(b, `,"type":"`...)
	b = append(b, g.skewed(eventTypes)...)
	b = append(b, `","user_id":`...)
	b = strconv.AppendInt(b, int64(r.IntN(20_000_000)), 10)
	b = append(b, `,"account":"acct_`...)
	b = strconv.AppendUint(b, r.Uint64()>>28, 36)
	b = append(b, `","status":"`...)
	b = append(b, g.skewed(statuses)...)
	b = append(b, `","country":"`...)
	b = append(b, g.skewed(countries)...)
	b = append(b, `","lang":"`...)
	b = append(b, g.skewed(langs)...)
	b = append(b, '"')
	if r.IntN(3) > 0 {
		b = append(b, `,"amount":`...)
		b = strconv.AppendFloat(b, math.Round(r.ExpFloat64()*4200)/100, 'f', 2, 64)
		b = append(b, `,"currency":"`...)
		b = append(b, g.skewed(currencies)...)
		b = append(b, '"')
	}
	if r.IntN(2) == 0 {
		b = fmt.Appendf(b, `,"ip":"%d.%d.%d.%d"`, 1+r.IntN(223), r.IntN(256), r.IntN(256), 1+r.IntN(254))
		b = append(b, `,"ua":"`...)
		b = append(b, g.skewed(agents)...)
		b = append(b, '"')
	}
	b = append(b, `,"tags":[`...)
	for i := range r.IntN(5) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, g.pick(words)...)
		b = append(b, '"')
	}
	b = append(b, `],"attrs":{`...)
	for i := range r.IntN(7) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, g.pick(attrKeys)...)
		b = append(b, `":`...)
		switch r.IntN(3) {
		case 0:
			b = strconv.AppendInt(b, int64(r.IntN(100000)), 10)
		case 1:
			b = append(b, '"')
			b = append(b, g.pick(words)...)
			b = append(b, '-')
			b = strconv.AppendInt(b, int64(r.IntN(1000)), 10)
			b = append(b, '"')
		default:
			b = strconv.AppendFloat(b, r.Float64(), 'f', 4, 64)
		}
	}
	b = append(b, `},"version":`...)
	b = strconv.AppendInt(b, int64(1+r.IntN(9)), 10)
	// The payload: random bytes (an encrypted token, a compressed blob, an
	// image thumbnail) of exponentially distributed length.
	pl := int(r.ExpFloat64() * g.payload)
	pl = min(pl, int(16*g.payload)+16)
	if pl > 0 {
		if cap(g.raw) < pl {
			g.raw = make([]byte, pl)
		}
		raw := g.raw[:pl]
		for i := 0; i < pl; i += 8 {
			v := r.Uint64()
			for j := i; j < min(i+8, pl); j++ {
				raw[j] = byte(v)
				v >>= 8
			}
		}
		b = append(b, `,"payload":"`...)
		b = base64.StdEncoding.AppendEncode(b, raw)
		b = append(b, '"')
	}
	b = append(b, '}')
	g.buf = b
	return key, append([]byte(nil), b...)
}
