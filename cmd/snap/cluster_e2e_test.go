package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/snapbackup/snap/internal/testserver"
)

type clusterStatusJSON struct {
	UUID      string           `json:"uuid"`
	Status    string           `json:"status"`
	FreezeAt  time.Time        `json:"freeze_at"`
	Scheduled bool             `json:"scheduled"`
	Nodes     []nodeStatusJSON `json:"nodes"`
}

type nodeStatusJSON struct {
	Node     string     `json:"node"`
	Status   string     `json:"status"`
	Snapshot string     `json:"snapshot"`
	FrozenAt *time.Time `json:"frozen_at"`
	Error    string     `json:"error"`
}

// clusterNode is one member: its server's data directory and port, and
// its snap run.
type clusterNode struct {
	name, data, port string
	p                *runProc
	w                *writer
}

func (n *clusterNode) addr() string { return "127.0.0.1:" + n.port }

func (n *clusterNode) start(t *testing.T, e *env, bin string, extra ...string) {
	t.Helper()
	args := append([]string{"--cluster", "shop", "--node", n.name, "--poll", "200ms", "--heartbeat", "1s"}, extra...)
	args = append(args, "--", bin, "--port", n.port, "--rocksdb_db_path", n.data, "--rocksdb_create_if_missing_one_off",
		"--write_buffer_size", "262144", "--level0_file_num_compaction_trigger", "20")
	n.p = startRun(t, e, args...)
	n.p.waitLog("joined the cluster", 30*time.Second)
	n.p.waitLog("server ready", 30*time.Second)
}

func (n *clusterNode) stop(t *testing.T) {
	t.Helper()
	n.p.signal(syscall.SIGTERM)
	if code := n.p.wait(60 * time.Second); code != 0 {
		t.Fatalf("node %s: snap run exited %d", n.name, code)
	}
}

// waitStatus polls snap cluster status until the group is no longer
// processing.
func waitStatus(t *testing.T, e *env, uuid string, timeout time.Duration) clusterStatusJSON {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var st clusterStatusJSON
		e.ok(&st, "cluster", "status", "--cluster", "shop", "--group", uuid, "--json")
		if st.Status != "processing" {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s still processing after %v: %+v", uuid, timeout, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func nodeStatus(st clusterStatusJSON, node string) (status, errMsg string) {
	for _, n := range st.Nodes {
		if n.Node == node {
			return n.Status, n.Error
		}
	}
	return "", ""
}

// TestClusterEndToEnd: three real RocksDB servers, each under its own
// snap run --cluster and write load, one local repository. A group
// completes with every freeze within the skew; a stopped node shows
// missing; a node whose server fails FREEZE shows failed with the error;
// after wiping every data directory each node restores its part of the
// completed group, never of a failed one, and holds exactly its keys.
func TestClusterEndToEnd(t *testing.T) {
	bin := testserver.Binary(t)
	if _, err := exec.LookPath("ldb"); err != nil {
		t.Fatal("ldb not found: run make deps (Debian package rocksdb-tools)")
	}
	e := newEnv(t)
	e.ok(nil, "init")
	work := t.TempDir()
	nodes := make([]*clusterNode, 3)
	for i := range nodes {
		nodes[i] = &clusterNode{name: fmt.Sprintf("db-%d", i), data: filepath.Join(work, fmt.Sprintf("data-%d", i)), port: freePort(t)}
		nodes[i].start(t, e, bin)
		nodes[i].w = startWriterPrefix(nodes[i].addr(), nodes[i].name+":")
	}
	var members []struct {
		Node  string `json:"node"`
		Alive bool   `json:"alive"`
	}
	e.ok(&members, "cluster", "nodes", "--cluster", "shop", "--json")
	if len(members) != 3 || !members[0].Alive || members[2].Node != "db-2" {
		t.Fatalf("members %+v", members)
	}

	// A group while the load runs.
	time.Sleep(time.Second)
	var asked struct{ UUID, Status string }
	e.ok(&asked, "cluster", "snapshot", "--cluster", "shop", "--json")
	if asked.Status != "processing" || len(asked.UUID) != 36 {
		t.Fatalf("cluster snapshot said %+v", asked)
	}
	// A second request while it processes is refused, naming it.
	if r := e.run("cluster", "snapshot", "--cluster", "shop"); r.code != 1 || !strings.Contains(r.stderr, asked.UUID) {
		t.Fatalf("second request: exit %d, %s", r.code, r.stderr)
	}
	good := waitStatus(t, e, asked.UUID, 60*time.Second)
	if good.Status != "completed" || len(good.Nodes) != 3 {
		t.Fatalf("group %+v", good)
	}
	var skews []time.Duration
	for _, n := range good.Nodes {
		if n.Status != "completed" || n.FrozenAt == nil || n.Snapshot == "" {
			t.Fatalf("node %+v", n)
		}
		skew := n.FrozenAt.Sub(good.FreezeAt)
		if skew.Abs() > time.Second {
			t.Fatalf("node %s froze %v from the moment, over the 1s skew", n.Node, skew)
		}
		skews = append(skews, skew)
	}
	t.Logf("group %s: freeze skews %v", good.UUID, skews)

	// A node stopped before the request is missing, and the group fails.
	nodes[2].w.stop.Store(true)
	nodes[2].w.wg.Wait()
	nodes[2].stop(t)
	r := e.run("cluster", "snapshot", "--cluster", "shop", "--timeout", "8s", "--wait", "--json")
	if r.code != 1 {
		t.Fatalf("--wait on a group with a stopped node: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	var missing clusterStatusJSON
	if err := json.Unmarshal([]byte(r.stdout), &missing); err != nil {
		t.Fatalf("--wait --json: %v\n%s", err, r.stdout)
	}
	if s, _ := nodeStatus(missing, "db-2"); s != "missing" || missing.Status != "failed" {
		t.Fatalf("stopped node: %+v", missing)
	}
	if s, _ := nodeStatus(missing, "db-0"); s != "completed" {
		t.Fatalf("a running node in the failed group: %+v", missing)
	}

	// A node whose server fails FREEZE reports it.
	c1 := redis.NewClient(&redis.Options{Addr: nodes[1].addr()})
	defer c1.Close()
	command(t, c1, "FAILFREEZE", "injected: disk full")
	nodes[2].start(t, e, bin)
	e.ok(&asked, "cluster", "snapshot", "--cluster", "shop", "--json", "--timeout", "30s")
	failed := waitStatus(t, e, asked.UUID, 60*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for slices.ContainsFunc(failed.Nodes, func(n nodeStatusJSON) bool { return n.Status == "processing" }) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		e.ok(&failed, "cluster", "status", "--cluster", "shop", "--group", asked.UUID, "--json")
	}
	if s, msg := nodeStatus(failed, "db-1"); s != "failed" || !strings.Contains(msg, "injected: disk full") || failed.Status != "failed" {
		t.Fatalf("node whose FREEZE fails: %+v", failed)
	}
	command(t, c1, "FAILFREEZE")

	var groups []struct {
		UUID, Status string
	}
	e.ok(&groups, "cluster", "ls", "--cluster", "shop", "--json")
	if len(groups) != 3 || groups[0].Status != "failed" || groups[1].Status != "failed" || groups[2].UUID != good.UUID || groups[2].Status != "completed" {
		t.Fatalf("cluster ls: %+v", groups)
	}

	// The tar stream of one part holds that node's database.
	tarFile := filepath.Join(work, "db-0.tar")
	e.ok(nil, "restore", "--group", good.UUID, "--node", "db-0", "--tar", tarFile)
	if out, err := exec.Command("tar", "-tf", tarFile).CombinedOutput(); err != nil || !strings.Contains(string(out), "CURRENT") {
		t.Fatalf("tar -tf: %v\n%s", err, out)
	}

	// Stop everything, wipe every data directory: each node restores its
	// part of the completed group (the newest completed, not a failed one).
	type expect struct {
		keys   []string
		vals   map[string]string
		before int
	}
	want := map[string]expect{}
	frozen := map[string]time.Time{}
	for _, n := range good.Nodes {
		frozen[n.Node] = *n.FrozenAt
	}
	for _, n := range nodes {
		if !n.w.stop.Load() {
			n.w.stop.Store(true)
			n.w.wg.Wait()
		}
		n.stop(t)
		keys, vals, before := n.w.split(frozen[n.name].Add(-100 * time.Millisecond))
		if before < 50 {
			t.Fatalf("node %s: only %d keys acknowledged before its freeze", n.name, before)
		}
		want[n.name] = expect{keys, vals, before}
		if err := os.RemoveAll(n.data); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		n.start(t, e, bin)
		if got := n.p.find("restoring this node's part"); len(got) != 1 || got[0]["group"] != good.UUID {
			t.Fatalf("node %s restored %v, want group %s", n.name, got, good.UUID)
		}
	}
	for _, n := range nodes {
		n.stop(t)
		checkConsistency(t, n.data)
		w := want[n.name]
		checkRestored(t, ldbScan(t, n.data), map[string]string{}, w.keys, w.vals, w.before)
	}
}

type clusterGroupJSON struct {
	UUID      string    `json:"uuid"`
	Status    string    `json:"status"`
	FreezeAt  time.Time `json:"freeze_at"`
	Scheduled bool      `json:"scheduled"`
	Members   int       `json:"members"`
	Completed int       `json:"completed"`
}

type groupSnapJSON struct {
	ID    string `json:"id"`
	Host  string `json:"host"`
	Group *struct {
		UUID string `json:"uuid"`
		Node string `json:"node"`
	} `json:"group"`
}

// TestClusterGCSScheduled: a cluster on the GCS emulator with one node
// under snap run and one under snap agent: a requested group with --wait,
// then scheduled groups every 2s with no request, whose UUID both derive;
// prune --keep-last 1 keeps the newest completed group whole and removes
// the older groups with their objects.
func TestClusterGCSScheduled(t *testing.T) {
	bin := testserver.Binary(t)
	gcs := startFakeGCS(t)
	gcs.createBucket("snap-cluster")
	e := gcsEnv(t, gcs, "gs://snap-cluster/shop")
	e.ok(nil, "init")
	work := t.TempDir()
	a := &clusterNode{name: "db-a", data: filepath.Join(work, "a"), port: freePort(t)}
	bData := filepath.Join(work, "b")
	bSrv := testserver.Start(t, bin, bData, "--write_buffer_size", "262144")
	startAgent := func(extra ...string) *runProc {
		p := startSnap(t, e, append([]string{"agent", "--log-format", "json", "--cluster", "shop", "--node", "db-b",
			"--server", bSrv.Addr, "--data", bData, "--poll", "200ms", "--heartbeat", "1s"}, extra...)...)
		p.waitLog("joined the cluster", 30*time.Second)
		return p
	}
	stopProc := func(p *runProc) {
		p.signal(syscall.SIGTERM)
		if code := p.wait(60 * time.Second); code != 0 {
			t.Fatalf("exit %d after SIGTERM\n%s", code, p.out())
		}
	}
	a.start(t, e, bin)
	b := startAgent()
	wa, wb := startWriterPrefix(a.addr(), "a:"), startWriterPrefix(bSrv.Addr, "b:")
	defer func() {
		for _, w := range []*writer{wa, wb} {
			w.stop.Store(true)
			w.wg.Wait()
		}
	}()
	time.Sleep(500 * time.Millisecond)
	var done clusterStatusJSON
	e.ok(&done, "cluster", "snapshot", "--cluster", "shop", "--wait", "--json")
	if done.Status != "completed" || len(done.Nodes) != 2 {
		t.Fatalf("requested group: %+v", done)
	}

	// Scheduled groups: both members on the same 2s boundaries.
	a.stop(t)
	stopProc(b)
	a.start(t, e, bin, "--schedule", "2s", "--group-timeout", "2s")
	b = startAgent("--schedule", "2s", "--group-timeout", "2s")
	var groups []clusterGroupJSON
	deadline := time.Now().Add(60 * time.Second)
	for {
		e.ok(&groups, "cluster", "ls", "--cluster", "shop", "--json")
		n := 0
		for _, g := range groups {
			if g.Scheduled && g.Status == "completed" {
				n++
				if g.Members != 2 || g.FreezeAt.UnixNano()%int64(2*time.Second) != 0 {
					t.Fatalf("scheduled group %+v", g)
				}
			}
		}
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 3 completed scheduled groups in 60s: %+v\nagent:\n%s", groups, b.out())
		}
		time.Sleep(500 * time.Millisecond)
	}
	a.stop(t)
	stopProc(b)
	time.Sleep(2500 * time.Millisecond) // a group the stops cut short times out

	// Retention by group.
	e.ok(&groups, "cluster", "ls", "--cluster", "shop", "--json")
	var newest clusterGroupJSON
	for _, g := range groups {
		if g.Status == "completed" && g.FreezeAt.After(newest.FreezeAt) {
			newest = g
		}
	}
	e.ok(nil, "prune", "--keep-last", "1")
	var snaps []groupSnapJSON
	e.ok(&snaps, "ls", "--json")
	var after []clusterGroupJSON
	e.ok(&after, "cluster", "ls", "--cluster", "shop", "--json")
	kept := map[string]clusterGroupJSON{}
	for _, g := range after {
		kept[g.UUID] = g
		if g.UUID != newest.UUID && (g.Status == "completed" || !g.FreezeAt.After(newest.FreezeAt)) {
			t.Fatalf("prune kept group %+v; the newest completed is %s", g, newest.UUID)
		}
	}
	if _, ok := kept[newest.UUID]; !ok {
		t.Fatalf("prune removed the newest completed group %s: %+v", newest.UUID, after)
	}
	parts := 0
	for _, sn := range snaps {
		if sn.Group == nil {
			t.Fatalf("snapshot %s outside a group", sn.ID)
		}
		if _, ok := kept[sn.Group.UUID]; !ok {
			t.Fatalf("snapshot %s of removed group %s kept", sn.ID, sn.Group.UUID)
		}
		if sn.Group.UUID == newest.UUID {
			parts++
		}
	}
	if parts != 2 || len(groups) <= len(after) {
		t.Fatalf("after prune: %d parts of the newest completed group, %d groups of %d left", parts, len(after), len(groups))
	}
	// Every member restores its part of the kept group.
	for _, node := range []string{"db-a", "db-b"} {
		target := filepath.Join(work, "restored-"+node)
		e.ok(nil, "restore", "--group", newest.UUID, "--node", node, "--target", target)
		checkConsistency(t, target)
	}
}

// TestClusterBadInput: unknown cluster and group, bad names, a second
// request, skews and leads no member can keep: exit 1 (2 for usage) and
// nothing written.
func TestClusterBadInput(t *testing.T) {
	e := newEnv(t)
	e.ok(nil, "init")
	data := t.TempDir()
	p := startSnap(t, e, "agent", "--log-format", "json", "--cluster", "shop", "--node", "db-0", "--server", "127.0.0.1:1", "--data", data, "--poll", "300ms", "--heartbeat", "1h")
	p.waitLog("joined the cluster", 30*time.Second)
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("agent exit %d", code)
	}
	objects := func() []string {
		ents, _ := os.ReadDir(filepath.Join(e.repo, "cluster"))
		var names []string
		for _, en := range ents {
			names = append(names, en.Name())
		}
		return names
	}
	before := objects()
	if len(before) != 1 {
		t.Fatalf("after one agent: %v", before)
	}
	id := "3f3a291c-9d6a-4427-9a91-cb1219d60811"
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"cluster", "ls"}, 2, "needs --cluster"},
		{[]string{"cluster", "status", "--cluster", "shop"}, 2, "needs --group"},
		{[]string{"cluster", "status", "--cluster", "nope", "--group", id}, 1, "unknown cluster nope"},
		{[]string{"cluster", "snapshot", "--cluster", "nope"}, 1, "unknown cluster nope"},
		{[]string{"cluster", "status", "--cluster", "shop", "--group", id}, 1, "unknown group " + id},
		{[]string{"cluster", "status", "--cluster", "shop", "--group", "not-a-uuid"}, 1, "is not a UUID"},
		{[]string{"cluster", "remove", "--cluster", "shop", "--node", "a/../b"}, 1, "contains '/'"},
		{[]string{"cluster", "remove", "--cluster", "shop", "--node", ".."}, 1, "node name"},
		{[]string{"cluster", "remove", "--cluster", "shop", "--node", "db-9"}, 1, "not a member"},
		{[]string{"cluster", "nodes", "--cluster", "Shop"}, 1, "upper case"},
		{[]string{"cluster", "snapshot", "--cluster", "shop", "--max-skew", "1ms"}, 1, "below 10ms"},
		{[]string{"cluster", "snapshot", "--cluster", "shop", "--lead", "100ms"}, 1, "shorter than the slowest member's poll interval 300ms"},
		{[]string{"cluster", "snapshot", "--cluster", "shop", "--timeout", "0s"}, 1, "--timeout must be positive"},
		{[]string{"restore", "--group", id, "--node", "../x"}, 1, "node name"},
		{[]string{"restore", "--group", id, "--node", "db-0"}, 1, "unknown group"},
		{[]string{"restore", "--group", id}, 2, "go together"},
		{[]string{"agent", "--cluster", "shop", "--node", "a/b", "--data", data}, 1, "contains '/'"},
		{[]string{"run", "--cluster", "shop", "--", "true"}, 2, "--cluster needs --node"},
		{[]string{"run", "--cluster", "shop", "--node", "n", "--every", "1h", "--", "true"}, 2, "--schedule"},
	} {
		r := e.run(tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("snap %s: exit %d, stderr %q; want %d and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.code, tc.want)
		}
	}
	if after := objects(); !slices.Equal(before, after) {
		t.Fatalf("bad input wrote cluster objects: %v -> %v", before, after)
	}
	// A second request while one processes: refused with its UUID, and
	// nothing of the second written.
	var asked struct{ UUID string }
	e.ok(&asked, "cluster", "snapshot", "--cluster", "shop", "--json", "--timeout", "1h")
	mid := objects()
	if r := e.run("cluster", "snapshot", "--cluster", "shop"); r.code != 1 || !strings.Contains(r.stderr, asked.UUID) {
		t.Fatalf("second request: exit %d, %s", r.code, r.stderr)
	}
	if after := objects(); !slices.Equal(mid, after) {
		t.Fatalf("a refused request wrote: %v -> %v", mid, after)
	}
}
