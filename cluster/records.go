package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
)

const recordVersion = 1

// Duration is a time.Duration stored as Go writes it ("1m30s").
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("negative duration %s", s)
	}
	*d = Duration(v)
	return nil
}

// Member is a node's record, rewritten at each heartbeat.
type Member struct {
	Version   int       `json:"version"`
	Cluster   string    `json:"cluster"`
	Node      string    `json:"node"`
	Host      string    `json:"host"`             // the host its snapshots record
	Kind      string    `json:"kind"`             // its source kind
	Server    string    `json:"server,omitempty"` // what it backs up
	Data      string    `json:"data,omitempty"`
	Joined    time.Time `json:"joined"`    // first registration (of this membership)
	Heartbeat time.Time `json:"heartbeat"` // when this record was written
	// Every is how often it writes this record; Poll how often it reads
	// the cluster's request.
	Every Duration `json:"every"`
	Poll  Duration `json:"poll"`
	// Schedule: it takes part in the groups at every multiple of it
	// (zero: requested groups only), each with GroupTimeout and MaxSkew.
	Schedule     Duration `json:"schedule,omitempty"`
	GroupTimeout Duration `json:"group_timeout,omitempty"`
	MaxSkew      Duration `json:"max_skew,omitempty"`
	Program      string   `json:"program,omitempty"`
}

// Request is a requested group: the group record, and the cluster's
// current request while it is the newest.
type Request struct {
	Version  int       `json:"version"`
	Cluster  string    `json:"cluster"`
	UUID     string    `json:"uuid"`
	Created  time.Time `json:"created"`
	FreezeAt time.Time `json:"freeze_at"`
	Timeout  Duration  `json:"timeout"`  // from FreezeAt: a member with no part by then is missing
	MaxSkew  Duration  `json:"max_skew"` // how far a member's freeze may be from FreezeAt
	Members  []string  `json:"members"`  // the members when it was asked, sorted
	By       string    `json:"by,omitempty"`
}

// Status is a node's part of a group: written once, when it is done.
type Status struct {
	Version   int       `json:"version"`
	Cluster   string    `json:"cluster"`
	UUID      string    `json:"uuid"`
	Node      string    `json:"node"`
	Completed bool      `json:"completed"`
	Snapshot  string    `json:"snapshot,omitempty"` // the snapshot it wrote (also when it failed by the skew)
	FreezeAt  time.Time `json:"freeze_at"`          // the group's moment
	FrozenAt  time.Time `json:"frozen_at,omitzero"` // when its freeze was taken
	Error     string    `json:"error,omitempty"`    // why it failed
	Schedule  Duration  `json:"schedule,omitempty"` // a scheduled group's schedule
	Timeout   Duration  `json:"timeout,omitempty"`  // a scheduled group's timeout, as this node had it
	MaxSkew   Duration  `json:"max_skew,omitempty"`
	Written   time.Time `json:"written"`
}

func corrupt(what string, err error) error {
	return fmt.Errorf("%w: %s: %v", repo.ErrCorrupt, what, err)
}

func decodeVersion(data []byte, what string, v any) error {
	var head struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return corrupt(what, err)
	}
	if head.Version > recordVersion {
		return fmt.Errorf("%s format version %d is newer than this snap reads (%d); upgrade snap", what, head.Version, recordVersion)
	}
	if head.Version < 1 {
		return corrupt(what, fmt.Errorf("version %d", head.Version))
	}
	if err := json.Unmarshal(data, v); err != nil {
		return corrupt(what, err)
	}
	return nil
}

// DecodeMember parses and validates a member record.
func DecodeMember(data []byte) (*Member, error) {
	var m Member
	if err := decodeVersion(data, "member record", &m); err != nil {
		return nil, err
	}
	err := errors.Join(snapshot.CheckName("cluster", m.Cluster), snapshot.CheckName("node", m.Node))
	if err == nil && (m.Joined.IsZero() || m.Heartbeat.IsZero() || m.Poll <= 0 || m.Every <= 0) {
		err = errors.New("no join time, heartbeat, poll or heartbeat interval")
	}
	if err != nil {
		return nil, corrupt("member record", err)
	}
	return &m, nil
}

// DecodeRequest parses and validates a group request.
func DecodeRequest(data []byte) (*Request, error) {
	var q Request
	if err := decodeVersion(data, "group request", &q); err != nil {
		return nil, err
	}
	err := snapshot.CheckName("cluster", q.Cluster)
	if err == nil {
		_, err = snapshot.ParseUUID(q.UUID)
	}
	if err == nil && (q.FreezeAt.IsZero() || q.Timeout <= 0 || len(q.Members) == 0) {
		err = errors.New("no freeze moment, timeout or members")
	}
	for _, n := range q.Members {
		if err == nil {
			err = snapshot.CheckName("node", n)
		}
	}
	if err == nil && (!slices.IsSorted(q.Members) || len(slices.Compact(slices.Clone(q.Members))) != len(q.Members)) {
		err = errors.New("members not sorted and unique")
	}
	if err != nil {
		return nil, corrupt("group request", err)
	}
	return &q, nil
}

// DecodeStatus parses and validates a node's status in a group.
func DecodeStatus(data []byte) (*Status, error) {
	var s Status
	if err := decodeVersion(data, "node status", &s); err != nil {
		return nil, err
	}
	err := errors.Join(snapshot.CheckName("cluster", s.Cluster), snapshot.CheckName("node", s.Node))
	if err == nil {
		_, err = snapshot.ParseUUID(s.UUID)
	}
	if err == nil && s.Snapshot != "" {
		_, err = repo.ParseID(s.Snapshot)
	}
	switch {
	case err != nil:
	case s.FreezeAt.IsZero():
		err = errors.New("no freeze moment")
	case s.Completed && (s.Snapshot == "" || s.FrozenAt.IsZero()):
		err = errors.New("completed without a snapshot or freeze time")
	case !s.Completed && s.Error == "":
		err = errors.New("failed without an error")
	}
	if err != nil {
		return nil, corrupt("node status", err)
	}
	return &s, nil
}

func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain structs
	}
	return b
}
