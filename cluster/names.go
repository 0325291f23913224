// Package cluster keeps cluster groups in a repository: the members of a
// cluster and their heartbeats, group requests, and each node's status in
// a group, so that one command takes a consistent snapshot of every node
// with no coordinator but the repository (docs/design.md, "Cluster
// groups").
package cluster

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/snapbackup/snap/snapshot"
)

// Object names, all of type repo.ClusterFile. Cluster and node names hold
// no '+' (snapshot.CheckName), so '+' splits a name one way only:
//
//	<cluster>+member+<node>+<unix ns>       a member's record, rewritten at each heartbeat
//	<cluster>+removed+<node>+<unix ns>      the member left the cluster then
//	<cluster>+group+<uuid>                  a requested group
//	<cluster>+request                       the current request: what nodes poll
//	<cluster>+status+<uuid>+<unix s>+<node>+<c|f>
//	                                        a node's part: completed or failed, and
//	                                        the group's freeze moment, so that a
//	                                        listing alone gives every group's state
const sep = "+"

func memberName(c, node string, at time.Time) string {
	return c + sep + "member" + sep + node + sep + fmt.Sprintf("%019d", at.UnixNano())
}

func removedName(c, node string, at time.Time) string {
	return c + sep + "removed" + sep + node + sep + fmt.Sprintf("%019d", at.UnixNano())
}

func groupName(c, uuid string) string { return c + sep + "group" + sep + uuid }

func requestName(c string) string { return c + sep + "request" }

func statusName(c, uuid string, freezeAt time.Time, node string, completed bool) string {
	outcome := "f"
	if completed {
		outcome = "c"
	}
	return c + sep + "status" + sep + uuid + sep + strconv.FormatInt(freezeAt.Unix(), 10) + sep + node + sep + outcome
}

// name is a parsed object name.
type name struct {
	cluster, kind string
	node, uuid    string
	at            time.Time // member, removed: when written; status: the group's freeze second
	completed     bool      // status
}

// parseName parses an object name; ok is false for a name of no kind
// this package writes.
func parseName(s string) (n name, ok bool) {
	parts := strings.Split(s, sep)
	if len(parts) < 2 || snapshot.CheckName("cluster", parts[0]) != nil {
		return n, false
	}
	n.cluster, n.kind = parts[0], parts[1]
	ns := func(p string) (time.Time, bool) {
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil || v < 0 {
			return time.Time{}, false
		}
		return time.Unix(0, v), true
	}
	switch {
	case (n.kind == "member" || n.kind == "removed") && len(parts) == 4:
		n.node = parts[2]
		n.at, ok = ns(parts[3])
		return n, ok && snapshot.CheckName("node", n.node) == nil
	case n.kind == "group" && len(parts) == 3:
		n.uuid = parts[2]
		_, err := snapshot.ParseUUID(n.uuid)
		return n, err == nil
	case n.kind == "request" && len(parts) == 2:
		return n, true
	case n.kind == "status" && len(parts) == 6:
		n.uuid, n.node = parts[2], parts[4]
		sec, err := strconv.ParseInt(parts[3], 10, 64)
		if _, uerr := snapshot.ParseUUID(n.uuid); uerr != nil || err != nil || sec < 0 ||
			snapshot.CheckName("node", n.node) != nil || (parts[5] != "c" && parts[5] != "f") {
			return n, false
		}
		n.at, n.completed = time.Unix(sec, 0), parts[5] == "c"
		return n, true
	}
	return n, false
}
