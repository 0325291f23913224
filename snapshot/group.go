package snapshot

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// GroupRef places a snapshot in a cluster group: the part one node took of
// a cluster snapshot (docs/design.md, "Cluster groups").
type GroupRef struct {
	Cluster string `json:"cluster"`
	UUID    string `json:"uuid"`
	Node    string `json:"node"`
	// FreezeAt is the moment the group asked every member to freeze at;
	// the snapshot's Time is when this node's freeze was taken.
	FreezeAt time.Time `json:"freeze_at"`
}

// Validate checks the names and the UUID.
func (g *GroupRef) Validate() error {
	if err := CheckName("cluster", g.Cluster); err != nil {
		return err
	}
	if err := CheckName("node", g.Node); err != nil {
		return err
	}
	if _, err := ParseUUID(g.UUID); err != nil {
		return err
	}
	if g.FreezeAt.IsZero() {
		return errors.New("group without a freeze moment")
	}
	return nil
}

// ParseUUID parses a group UUID in its canonical form, lower case with
// hyphens (what snap writes and prints).
func ParseUUID(s string) (uuid.UUID, error) {
	u, err := uuid.Parse(s)
	if err != nil || u.String() != s {
		return uuid.UUID{}, fmt.Errorf("group %q is not a UUID like 6f1c0e4a-3b2d-4c5e-9f8a-1b2c3d4e5f60", s)
	}
	return u, nil
}

// maxNameLen bounds cluster and node names: a DNS label's length.
const maxNameLen = 63

// CheckName accepts a cluster or node name (what says which): 1 to 63
// bytes of a-z, 0-9, '-' and '_', starting and ending with a letter or
// digit, as DNS labels and Kubernetes pod names are. Names become parts
// of object names in the repository, so nothing that could leave a
// directory or be read two ways ('/', "..", '.', '+') is allowed.
func CheckName(what, s string) error {
	bad := func(why string) error {
		return fmt.Errorf("%s name %q: %s (use 1 to %d of a-z, 0-9, '-' and '_', starting and ending with a letter or digit, like db-0)", what, s, why, maxNameLen)
	}
	switch {
	case s == "":
		return bad("empty")
	case len(s) > maxNameLen:
		return bad(fmt.Sprintf("%d bytes long", len(s)))
	case strings.Contains(s, "/") || strings.Contains(s, ".."):
		return bad("contains '/' or \"..\"")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z' || '0' <= c && c <= '9':
		case (c == '-' || c == '_') && i > 0 && i < len(s)-1:
		case 'A' <= c && c <= 'Z':
			return bad("has upper case (names are lower case, like DNS names)")
		default:
			return bad(fmt.Sprintf("has %q", c))
		}
	}
	return nil
}

// GroupState is what retention needs to know of one cluster group.
type GroupState struct {
	Completed bool // every member completed its part
	Finished  bool // completed or failed: no member can still add its part
}

// applyToGroups decides for the snapshots of cluster groups, which the
// policy keeps or forgets a group at a time, per cluster: the keep rules
// run over the completed groups (each counted once, at its freeze
// moment, with the union of its snapshots' tags); a failed group is kept
// while it is newer than the newest completed one, a processing one
// always (its members may still be writing their parts). A group states
// does not know is taken for failed.
func applyToGroups(snaps []*Snapshot, p Policy, loc *time.Location, now time.Time, states map[string]GroupState) []Group {
	type unit struct {
		uuid  string
		state GroupState
		snaps []*Snapshot
	}
	byCluster := map[string]map[string]*unit{}
	for _, sn := range snaps {
		units := byCluster[sn.Group.Cluster]
		if units == nil {
			units = map[string]*unit{}
			byCluster[sn.Group.Cluster] = units
		}
		u := units[sn.Group.UUID]
		if u == nil {
			st, ok := states[sn.Group.UUID]
			if !ok {
				st = GroupState{Finished: true}
			}
			u = &unit{uuid: sn.Group.UUID, state: st}
			units[sn.Group.UUID] = u
		}
		u.snaps = append(u.snaps, sn)
	}
	clusters := make([]string, 0, len(byCluster))
	for c := range byCluster {
		clusters = append(clusters, c)
	}
	slices.Sort(clusters)
	var out []Group
	for _, c := range clusters {
		var reps []Decision // one stand-in per completed group
		repOf := map[*Snapshot]*unit{}
		var newestCompleted time.Time
		var others []*unit
		for _, u := range byCluster[c] {
			if !u.state.Completed && !p.Empty() {
				others = append(others, u)
				continue
			}
			rep := &Snapshot{Time: u.snaps[0].Group.FreezeAt, ID: u.snaps[0].ID}
			for _, sn := range u.snaps {
				for _, tag := range sn.Tags {
					if !slices.Contains(rep.Tags, tag) {
						rep.Tags = append(rep.Tags, tag)
					}
				}
			}
			repOf[rep] = u
			reps = append(reps, Decision{Snapshot: rep})
			if rep.Time.After(newestCompleted) {
				newestCompleted = rep.Time
			}
		}
		applyToGroup(reps, p, loc, now)
		g := Group{Cluster: c}
		add := func(u *unit, keep bool, reasons []string) {
			slices.SortFunc(u.snaps, func(a, b *Snapshot) int { return cmp.Compare(a.Group.Node, b.Group.Node) })
			for _, sn := range u.snaps {
				g.Decisions = append(g.Decisions, Decision{Snapshot: sn, Keep: keep, Reasons: slices.Clone(reasons)})
			}
		}
		for _, d := range reps {
			add(repOf[d.Snapshot], d.Keep, d.Reasons)
		}
		slices.SortFunc(others, func(a, b *unit) int { return b.snaps[0].Group.FreezeAt.Compare(a.snaps[0].Group.FreezeAt) })
		for _, u := range others {
			switch {
			case !u.state.Finished:
				add(u, true, []string{"group " + u.uuid + " is processing"})
			case u.snaps[0].Group.FreezeAt.After(newestCompleted):
				add(u, true, []string{"failed group newer than the newest completed one"})
			default:
				add(u, false, nil)
			}
		}
		slices.SortStableFunc(g.Decisions, func(a, b Decision) int {
			return b.Snapshot.Group.FreezeAt.Compare(a.Snapshot.Group.FreezeAt)
		})
		out = append(out, g)
	}
	return out
}
