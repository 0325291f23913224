package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

const (
	redisDialTimeout    = 5 * time.Second
	redisCommandTimeout = 30 * time.Second
	thawAttempts        = 3
)

// Redis is the FREEZE client for a sada-sliding server (Redis protocol).
// Every Freeze uses its own connection, kept until Release, so FREEZE and
// THAW go over the same connection whenever it stays up.
type Redis struct {
	addr    string
	dataDir string
	log     *slog.Logger
}

var _ Source = (*Redis)(nil)

// NewRedis returns a source for the server at addr (like "127.0.0.1:9015")
// whose database lives in dataDir. log may be nil.
func NewRedis(addr, dataDir string, log *slog.Logger) *Redis {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Redis{addr: addr, dataDir: dataDir, log: log}
}

// Info describes the source.
func (r *Redis) Info() Info {
	return Info{Kind: KindFreeze, Address: r.addr, DataDir: r.dataDir}
}

// Freeze sends FREEZE and returns the validated listing. On any error after
// FREEZE may have reached the server (a malformed reply, an error reply, a
// lost connection) it ends the freeze before returning.
func (r *Redis) Freeze(ctx context.Context) (*Frozen, error) {
	if r.dataDir == "" {
		return nil, errors.New("no data directory given for the server's files")
	}
	if fi, err := os.Stat(r.dataDir); err != nil {
		return nil, fmt.Errorf("data directory (set it with --data or SNAP_DATA): %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("data directory %s is not a directory", r.dataDir)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	var dialed atomic.Bool
	client := r.newClient(&dialed)
	reply, err := client.Do(ctx, "FREEZE").Result()
	if err != nil && !dialed.Load() {
		// No connection, so FREEZE never reached the server.
		client.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to server at %s: %w", r.addr, err)
		}
		return nil, fmt.Errorf("connect to server at %s: %w (is it running? set its address with --server or SNAP_SERVER)", r.addr, err)
	}
	if errors.Is(err, redis.Nil) {
		reply, err = nil, nil // a nil reply; ParseFreezeReply says what is wrong with it
	}
	var listing Listing
	if err != nil {
		err = r.freezeError(err)
	} else if listing, err = ParseFreezeReply(reply); err != nil {
		err = fmt.Errorf("FREEZE at %s: %w", r.addr, err)
	}
	if err != nil {
		// The server may be frozen even though its reply is unusable.
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ReleaseTimeout)
		defer cancel()
		return nil, errors.Join(err, r.thaw(tctx, client))
	}
	r.log.Debug("server frozen", "server", r.addr, "files", len(listing.Files))
	return NewFrozen(listing, r.dataDir, func(ctx context.Context) error {
		return r.thaw(ctx, client)
	}), nil
}

// newClient returns a client that records in dialed whether a connection
// was ever made, so Freeze can tell "never sent" from "sent, reply lost".
func (r *Redis) newClient(dialed *atomic.Bool) *redis.Client {
	d := net.Dialer{Timeout: redisDialTimeout, KeepAlive: 30 * time.Second}
	return redis.NewClient(&redis.Options{
		Addr: r.addr,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err == nil {
				dialed.Store(true)
			}
			return c, err
		},
		DialTimeout:   redisDialTimeout,
		DialerRetries: 1,
		// RocksDB counts DisableFileDeletions calls: a FREEZE retried after
		// a lost reply would freeze twice and one THAW would not end it.
		// thaw retries by itself.
		MaxRetries:            -1,
		ReadTimeout:           redisCommandTimeout,
		WriteTimeout:          redisCommandTimeout,
		ContextTimeoutEnabled: true,
		// One connection, never dropped for idleness: a backup can take
		// hours and the server may tie the freeze to the connection.
		PoolSize:        1,
		ConnMaxIdleTime: -1,
		// The server is not a real Redis: RESP2, and no handshake extras
		// (CLIENT SETINFO, CLIENT MAINT_NOTIFICATIONS) beyond HELLO, which
		// go-redis tolerates being unknown.
		Protocol:                 2,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

// freezeError explains an error FREEZE itself returned.
func (r *Redis) freezeError(err error) error {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return fmt.Errorf("FREEZE at %s: %w", r.addr, err)
	}
	if isUnknownCommand(err) {
		return fmt.Errorf("server at %s does not support FREEZE (is it sada-sliding?): %w", r.addr, err)
	}
	return fmt.Errorf("server at %s refused FREEZE: %w", r.addr, err)
}

// thaw ends the freeze with THAW and closes the client. A server that does
// not know THAW has no way to end a freeze; that is logged, not an error.
//
// Network errors are retried: a lost THAW leaves the server unable to delete
// obsolete files, which is worse than the rare repeated THAW after a reply
// was lost.
func (r *Redis) thaw(ctx context.Context, client *redis.Client) error {
	defer client.Close()
	var err error
	for attempt := 0; attempt < thawAttempts; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("end freeze at %s (THAW): %w; the server keeps its obsolete files until the freeze ends", r.addr, err)
			case <-time.After(time.Duration(attempt) * 500 * time.Millisecond):
			}
		}
		err = client.Do(ctx, "THAW").Err()
		if err == nil || errors.Is(err, redis.Nil) {
			r.log.Debug("freeze ended", "server", r.addr)
			return nil
		}
		var rerr redis.Error
		if errors.As(err, &rerr) {
			if isUnknownCommand(err) {
				r.log.Info("server has no THAW command, so snap cannot end its freeze", "server", r.addr, "reply", err.Error())
				return nil
			}
			break
		}
	}
	return fmt.Errorf("end freeze at %s (THAW): %w; the server keeps its obsolete files until the freeze ends", r.addr, err)
}

func isUnknownCommand(err error) bool {
	return strings.Contains(strings.ToLower(err.Error()), "unknown command")
}
