//go:build rocksdb

package main

import (
	"fmt"
	"log"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2/server"
)

// handler serves the Redis-protocol commands. The RESP server runs each
// connection on its own goroutine; RocksDB is safe for that.
type handler struct {
	db     *db
	logger *log.Logger

	mu     sync.Mutex // serializes FREEZE and THAW with depth
	frozen int        // FREEZE calls not yet matched by THAW
	// failFreeze, when set, is the error FREEZE answers (FAILFREEZE).
	failFreeze string
}

func (h *handler) listen(addr string) (*server.Server, error) {
	srv, err := server.NewServer(addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	cmds := map[string]server.Cmd{
		"PING":       h.ping,
		"QUIT":       h.quit,
		"FREEZE":     h.freeze,
		"THAW":       h.thaw,
		"FROZEN":     h.frozenDepth,
		"FAILFREEZE": h.setFailFreeze,
		"SET":        h.set,
		"GET":        h.get,
		"DEL":        h.del,
		"MSET":       h.mset,
		"MGET":       h.mget,
		"DBSIZE":     h.dbsize,
		"FLUSH":      h.flush,
		"COMPACT":    h.compact,
		"SHCARD":     h.shcard,
	}
	for name, f := range cmds {
		if err := srv.Register(name, f); err != nil {
			srv.Close()
			return nil, fmt.Errorf("register %s: %w", name, err)
		}
	}
	// Redis's wording, which clients (and snap's "server has no THAW"
	// detection) recognise; the hook sees the command upper-cased.
	srv.SetPreHook(func(c *server.Peer, cmd string, args ...string) bool {
		if srv.IsRegisteredCommand(cmd) {
			return false
		}
		var b strings.Builder
		fmt.Fprintf(&b, "ERR unknown command '%s', with args beginning with: ", cmd)
		for i, a := range args {
			if i == 20 {
				break
			}
			fmt.Fprintf(&b, "'%s' ", a)
		}
		c.WriteError(strings.TrimSpace(b.String()))
		return true
	})
	return srv, nil
}

func arity(c *server.Peer, cmd string, ok bool) bool {
	if !ok {
		c.WriteError(fmt.Sprintf("ERR wrong number of arguments for '%s' command", strings.ToLower(cmd)))
	}
	return ok
}

func dbError(c *server.Peer, err error) {
	c.WriteError("ERR " + strings.ReplaceAll(err.Error(), "\n", " "))
}

func (h *handler) ping(c *server.Peer, cmd string, args []string) {
	if !arity(c, cmd, len(args) <= 1) {
		return
	}
	if len(args) == 1 {
		c.WriteBulk(args[0])
		return
	}
	c.WriteInline("PONG")
}

func (h *handler) quit(c *server.Peer, cmd string, args []string) {
	c.WriteOK()
	c.Close()
}

// freeze implements the FREEZE contract: file deletions stay disabled until
// a matching THAW; freezes nest (RocksDB counts them).
func (h *handler) freeze(c *server.Peer, cmd string, args []string) {
	if !arity(c, cmd, len(args) == 0) {
		return
	}
	h.mu.Lock()
	if msg := h.failFreeze; msg != "" {
		h.mu.Unlock()
		c.WriteError("ERR " + msg)
		return
	}
	files, err := h.db.freeze()
	if err == nil {
		h.frozen++
	}
	h.mu.Unlock()
	if err != nil {
		dbError(c, fmt.Errorf("freeze: %w", err))
		return
	}
	c.WriteStrings(files)
}

// thaw ends one freeze. Without a freeze it does nothing: RocksDB's own
// counter would ignore it too, and a client retrying THAW must be safe.
func (h *handler) thaw(c *server.Peer, cmd string, args []string) {
	if !arity(c, cmd, len(args) == 0) {
		return
	}
	h.mu.Lock()
	var err error
	if h.frozen > 0 {
		if err = h.db.thaw(); err == nil {
			h.frozen--
		}
	}
	h.mu.Unlock()
	if err != nil {
		dbError(c, fmt.Errorf("thaw: %w", err))
		return
	}
	c.WriteOK()
}

// frozenDepth answers how many FREEZEs await a THAW. Test servers only: it
// lets tests check that a client ended every freeze it started.
func (h *handler) frozenDepth(c *server.Peer, cmd string, args []string) {
	if !arity(c, cmd, len(args) == 0) {
		return
	}
	h.mu.Lock()
	n := h.frozen
	h.mu.Unlock()
	c.WriteInt(n)
}

// setFailFreeze makes every FREEZE answer "ERR <message>" until FAILFREEZE
// without a message. Test servers only: it stands in for a server that
// cannot freeze (a full disk, a database in error).
func (h *handler) setFailFreeze(c *server.Peer, cmd string, args []string) {
	if !arity(c, cmd, len(args) <= 1) {
		return
	}
	h.mu.Lock()
	h.failFreeze = ""
	if len(args) == 1 {
		h.failFreeze = args[0]
	}
	h.mu.Unlock()
	c.WriteOK()
}

func (h *handler) set(c *server.Peer, cmd string, args []string) {
	if len(args) > 2 {
		c.WriteError("ERR syntax error")
		return
	}
	if !arity(c, cmd, len(args) == 2) {
		return
	}
	if err := h.db.write([]op{{key: args[0], value: &args[1]}}); err != nil {
		dbError(c, err)
		return
	}
	c.WriteOK()
}

func (h *handler) mset(c *server.Peer, cmd string, args []string) {
	if !arity(c, cmd, len(args) > 0 && len(args)%2 == 0) {
		return
	}
	ops := make([]op, 0, len(args)/2)
	for i := 0; i < len(args); i += 2 {
		ops = append(ops, op{key: args[i], value: &args[i+1]})
	}
	if err := h.db.write(ops); err != nil {
		dbError(c, err)
		return
	}
	c.WriteOK()
}

func (h *handler) get(c *server.Peer, cmd string, args []string) {
	if !arity(c, cmd, len(args) == 1) {
		return
	}
	v, ok, err := h.db.get(args[0])
	switch {
	case err != nil:
		dbError(c, err)
	case !ok:
		c.WriteNull()
	default:
		c.WriteBulk(v)
	}
}

func (h *handler) mget(c *server.Peer, cmd string, args []string) {
	if !arity(c, cmd, len(args) > 0) {
		return
	}
	vals := make([]*string, len(args))
	for i, k := range args {
		v, ok, err := h.db.get(k)
		if err != nil {
			dbError(c, err)
			return
		}
		if ok {
			vals[i] = &v
		}
	}
	c.WriteLen(len(vals))
	for _, v := range vals {
		if v == nil {
			c.WriteNull()
		} else {
			c.WriteBulk(*v)
		}
	}
}

// del answers the number of keys that existed, like Redis. The check and the
// delete are not atomic; good enough for a test server.
func (h *handler) del(c *server.Peer, cmd string, args []string) {
	if !arity(c, cmd, len(args) > 0) {
		return
	}
	seen := make(map[string]bool, len(args))
	var ops []op
	n := 0
	for _, k := range args {
		if seen[k] {
			continue
		}
		seen[k] = true
		_, ok, err := h.db.get(k)
		if err != nil {
			dbError(c, err)
			return
		}
		if ok {
			n++
		}
		ops = append(ops, op{key: k})
	}
	if err := h.db.write(ops); err != nil {
		dbError(c, err)
		return
	}
	c.WriteInt(n)
}

func (h *handler) dbsize(c *server.Peer, cmd string, args []string) {
	if !arity(c, cmd, len(args) == 0) {
		return
	}
	n, err := h.db.intProperty("rocksdb.estimate-num-keys")
	if err != nil {
		dbError(c, err)
		return
	}
	c.WriteInt(int(n))
}

func (h *handler) flush(c *server.Peer, cmd string, args []string) {
	if !arity(c, cmd, len(args) == 0) {
		return
	}
	if err := h.db.flush(); err != nil {
		dbError(c, fmt.Errorf("flush: %w", err))
		return
	}
	c.WriteOK()
}

func (h *handler) compact(c *server.Peer, cmd string, args []string) {
	if !arity(c, cmd, len(args) == 0) {
		return
	}
	if err := h.db.compact(); err != nil {
		dbError(c, fmt.Errorf("compact: %w", err))
		return
	}
	c.WriteOK()
}

// shcard answers SHCARD time N: how many of the last N seconds (now
// included) have a time key, i.e. roughly how long the server ran in them.
func (h *handler) shcard(c *server.Peer, cmd string, args []string) {
	if !arity(c, cmd, len(args) == 2) {
		return
	}
	if args[0] != "time" {
		c.WriteError("ERR this test server only answers SHCARD time N")
		return
	}
	n, err := strconv.ParseInt(args[1], 10, 64)
	if err != nil || n < 0 {
		c.WriteError("ERR value is not an integer or out of range")
		return
	}
	now := time.Now().Unix()
	count, err := h.db.count(timeKey(now-n), timeKey(now+1))
	if err != nil {
		dbError(c, fmt.Errorf("shcard: %w", err))
		return
	}
	c.WriteInt(int(count))
}
