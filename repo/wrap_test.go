package repo_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snapbackup/snap/internal/directio"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/faulty"
	"github.com/snapbackup/snap/repo/limit"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/repo/retry"
)

// capable is a Backend with every optional interface, over mem. It counts
// the calls that reach it and fails the next call of an operation once
// when told to.
type capable struct {
	*mem.Backend
	mu    sync.Mutex
	calls map[string]int
	fail  map[string]error
}

var (
	_ repo.Spooler      = (*capable)(nil)
	_ repo.StreamSaver  = (*capable)(nil)
	_ repo.TempRemover  = (*capable)(nil)
	_ repo.PrefixLister = (*capable)(nil)
)

func newCapable() *capable {
	return &capable{Backend: mem.New(), calls: map[string]int{}, fail: map[string]error{}}
}

// call counts op and returns the failure set for it, once.
func (c *capable) call(op string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[op]++
	err := c.fail[op]
	delete(c.fail, op)
	return err
}

func (c *capable) count(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[op]
}

func (c *capable) failNext(op string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fail[op] = err
}

func (c *capable) Spool(ctx context.Context, t repo.FileType) (repo.Spool, error) {
	if err := c.call("spool"); err != nil {
		return nil, err
	}
	return &memSpool{c: c}, nil
}

type memSpool struct {
	c   *capable
	buf []byte
}

func (s *memSpool) Write(p []byte) error {
	if err := s.c.call("write"); err != nil {
		return err
	}
	s.buf = append(s.buf, p...)
	return nil
}

func (s *memSpool) Commit(ctx context.Context, h repo.Handle) error {
	if err := s.c.call("commit"); err != nil {
		return err
	}
	return s.c.Save(ctx, h, s.buf)
}

func (s *memSpool) Abort() { s.c.call("abort") }

func (c *capable) SaveFrom(ctx context.Context, h repo.Handle, src io.ReaderAt, size int64) error {
	if err := c.call("savefrom"); err != nil {
		return err
	}
	data := make([]byte, size)
	if _, err := src.ReadAt(data, 0); err != nil && err != io.EOF {
		return err
	}
	return c.Save(ctx, h, data)
}

func (c *capable) RemoveTemp(ctx context.Context, cutoff time.Time) (int, int64, error) {
	if err := c.call("removetemp"); err != nil {
		return 0, 0, err
	}
	return 3, 42, nil
}

func (c *capable) ListPrefix(ctx context.Context, t repo.FileType, prefix string, fn func(repo.FileInfo) error) error {
	if err := c.call("listprefix"); err != nil {
		return err
	}
	return c.Backend.ListPrefix(ctx, t, prefix, fn)
}

// Load hands fn a PlacedReader.
func (c *capable) Load(ctx context.Context, h repo.Handle, offset, length int64, fn func(rd io.Reader) error) error {
	return c.Backend.Load(ctx, h, offset, length, func(rd io.Reader) error {
		return fn(&placed{c: c, rd: rd, pos: offset})
	})
}

type placed struct {
	c   *capable
	rd  io.Reader
	pos int64
}

func (p *placed) Read(b []byte) (int, error) {
	n, err := p.rd.Read(b)
	p.pos += int64(n)
	return n, err
}

func (p *placed) ReadPlaced(b []byte, skip int64, n int) (int, error) {
	if err := p.c.call("readplaced"); err != nil {
		return 0, err
	}
	if _, err := io.CopyN(io.Discard, p.rd, skip); err != nil {
		return 0, io.ErrUnexpectedEOF
	}
	p.pos += skip
	pad := int(p.pos % directio.Align)
	if _, err := io.ReadFull(p.rd, b[pad:pad+n]); err != nil {
		return 0, io.ErrUnexpectedEOF
	}
	p.pos += int64(n)
	return pad, nil
}

// objectSize is more than one bucket of the slowest Limiter (4 KiB), so
// paying for it waits longer than any test's deadline, and Limiter says
// so at once instead of waiting.
const objectSize = 8 << 10

var object = bytes.Repeat([]byte("snap"), objectSize/4)

// placedHandle holds object in every test backend.
var placedHandle = repo.Handle{Type: repo.SnapshotFile, Name: repo.Hash(object).String()}

var errTransient = fmt.Errorf("injected: %w", syscall.ECONNRESET)

// capability is one optional interface: how to find it on a Backend and
// how to use it once.
type capability struct {
	name string
	// has reports whether be offers it.
	has func(t *testing.T, be repo.Backend) bool
	// use calls it once through be.
	use func(ctx context.Context, be repo.Backend) error
	// innerOp is the capable call use ends in.
	innerOp string
}

var capabilities = []capability{
	{
		name: "Spooler",
		has: func(t *testing.T, be repo.Backend) bool {
			_, ok := repo.As[repo.Spooler](be)
			return ok
		},
		use: func(ctx context.Context, be repo.Backend) error {
			sp, _ := repo.As[repo.Spooler](be)
			s, err := sp.Spool(ctx, repo.PackFile)
			if err != nil {
				return err
			}
			b := directio.Alloc(objectSize)
			copy(b, object)
			if err := s.Write(b); err != nil {
				s.Abort()
				return err
			}
			return s.Commit(ctx, repo.Handle{Type: repo.PackFile, Name: repo.Hash(object).String()})
		},
		innerOp: "commit",
	},
	{
		name: "StreamSaver",
		has: func(t *testing.T, be repo.Backend) bool {
			_, ok := repo.As[repo.StreamSaver](be)
			return ok
		},
		use: func(ctx context.Context, be repo.Backend) error {
			ss, _ := repo.As[repo.StreamSaver](be)
			return ss.SaveFrom(ctx, repo.Handle{Type: repo.IndexFile, Name: repo.Hash(object).String()}, bytes.NewReader(object), objectSize)
		},
		innerOp: "savefrom",
	},
	{
		name: "TempRemover",
		has: func(t *testing.T, be repo.Backend) bool {
			_, ok := repo.As[repo.TempRemover](be)
			return ok
		},
		use: func(ctx context.Context, be repo.Backend) error {
			tr, _ := repo.As[repo.TempRemover](be)
			n, size, err := tr.RemoveTemp(ctx, time.Now())
			if err == nil && (n != 3 || size != 42) {
				err = fmt.Errorf("removed %d files of %d bytes, want the inner backend's 3 of 42", n, size)
			}
			return err
		},
		innerOp: "removetemp",
	},
	{
		name: "PrefixLister",
		has: func(t *testing.T, be repo.Backend) bool {
			_, ok := repo.As[repo.PrefixLister](be)
			return ok
		},
		use: func(ctx context.Context, be repo.Backend) error {
			pl, _ := repo.As[repo.PrefixLister](be)
			var names []string
			err := pl.ListPrefix(ctx, repo.SnapshotFile, placedHandle.Name[:3], func(fi repo.FileInfo) error {
				names = append(names, fi.Name)
				return nil
			})
			if err == nil && !slices.Equal(names, []string{placedHandle.Name}) {
				err = fmt.Errorf("listed %q, want %q", names, placedHandle.Name)
			}
			return err
		},
		innerOp: "listprefix",
	},
	{
		name: "PlacedReader",
		has: func(t *testing.T, be repo.Backend) bool {
			var ok bool
			if err := be.Load(t.Context(), placedHandle, 0, 0, func(rd io.Reader) error {
				_, ok = rd.(repo.PlacedReader)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			return ok
		},
		use: func(ctx context.Context, be repo.Backend) error {
			return be.Load(ctx, placedHandle, 0, 0, func(rd io.Reader) error {
				b := directio.Alloc(repo.PlacedLen(objectSize))
				pad, err := rd.(repo.PlacedReader).ReadPlaced(b, 0, objectSize)
				if err != nil {
					return err
				}
				if !bytes.Equal(b[pad:pad+objectSize], object) {
					return errors.New("ReadPlaced read other bytes")
				}
				return nil
			})
		},
		innerOp: "readplaced",
	},
}

// notOptional are the interfaces of package repo that are not optional
// interfaces of a Backend or its readers.
var notOptional = []string{"Backend", "Spool", "Wrapper", "ownsCapability"}

// job checks that a capability through a wrapper still does the
// wrapper's job. inner holds placedHandle.
type job func(t *testing.T, ctx context.Context, inner *capable)

type wrapperCase struct {
	name string
	wrap func(t *testing.T, inner repo.Backend) repo.Backend
	// owns lists the capabilities the wrapper provides itself, with or
	// without the Backend beneath.
	owns []string
	// jobs has one entry per capability; a missing one fails the test, so
	// a new optional interface cannot go unhandled.
	jobs map[string]job
}

// deadline is far shorter than a 4 KiB bucket of a 1 byte/s Limiter
// takes, so a wait for one fails at once (rate.Limiter.WaitN).
func deadline(t *testing.T, ctx context.Context) context.Context {
	ctx, cancel := context.WithTimeout(ctx, time.Hour)
	t.Cleanup(cancel)
	return ctx
}

func isRateLimit(err error) bool { return err != nil && strings.Contains(err.Error(), "rate limit") }

func retryFast(inner repo.Backend) repo.Backend {
	return retry.New(inner, retry.Options{InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxElapsed: 10 * time.Second})
}

// retried fails the inner op once and wants the call through be to
// succeed with a second call.
func retried(c capability) job {
	return func(t *testing.T, ctx context.Context, inner *capable) {
		inner.failNext(c.innerOp, errTransient)
		if err := c.use(ctx, retryFast(inner)); err != nil {
			t.Fatalf("after one transient failure: %v", err)
		}
		if n := inner.count(c.innerOp); n != 2 {
			t.Errorf("inner %s called %d times, want 2 (a failure, then a retry)", c.innerOp, n)
		}
	}
}

// injected fails op through faulty and wants the call to fail before it
// reaches the inner backend.
func injected(c capability, op string, typ repo.FileType) job {
	return func(t *testing.T, ctx context.Context, inner *capable) {
		fb := faulty.New(inner)
		errInj := errors.New("injected")
		fb.FailOn(func(o string, h repo.Handle) error {
			if o == op && h.Type == typ {
				return errInj
			}
			return nil
		})
		if err := c.use(ctx, fb); !errors.Is(err, errInj) {
			t.Fatalf("with %s failed: %v, want the injected error", op, err)
		}
		if n := inner.count(c.innerOp); n != 0 {
			t.Errorf("inner %s called %d times, want 0: the failure comes first", c.innerOp, n)
		}
		if !slices.ContainsFunc(fb.Calls(), func(call faulty.Call) bool { return call.Op == op && errors.Is(call.Err, errInj) }) {
			t.Errorf("calls %v do not record the failed %s", fb.Calls(), op)
		}
	}
}

// passedOnce wants the call through wrap to reach the inner op once.
func passedOnce(c capability, wrap func(repo.Backend) repo.Backend) job {
	return func(t *testing.T, ctx context.Context, inner *capable) {
		if err := c.use(ctx, wrap(inner)); err != nil {
			t.Fatal(err)
		}
		if n := inner.count(c.innerOp); n != 1 {
			t.Errorf("inner %s called %d times, want 1", c.innerOp, n)
		}
	}
}

func capByName(name string) capability {
	for _, c := range capabilities {
		if c.name == name {
			return c
		}
	}
	panic("no capability " + name)
}

func wrapperCases(t *testing.T) []wrapperCase {
	spooler, streamer, remover, placedRd := capByName("Spooler"), capByName("StreamSaver"), capByName("TempRemover"), capByName("PlacedReader")
	lister := capByName("PrefixLister")
	spoolDir := t.TempDir()
	toFiles := func(be repo.Backend) repo.Backend { return repo.SpoolToFiles(be, spoolDir) }
	return []wrapperCase{
		{
			name: "limit",
			wrap: func(t *testing.T, inner repo.Backend) repo.Backend {
				return limit.New(inner, limit.NewLimiter(1<<30), limit.NewLimiter(1<<30))
			},
			jobs: map[string]job{
				"Spooler": func(t *testing.T, ctx context.Context, inner *capable) {
					be := limit.New(inner, limit.NewLimiter(1), nil)
					if err := spooler.use(deadline(t, ctx), be); !isRateLimit(err) {
						t.Fatalf("spooled %d bytes at 1 byte/s: %v, want a rate limit error", objectSize, err)
					}
					if n := inner.count("write"); n != 0 {
						t.Errorf("%d writes reached the spool before the rate allowed them", n)
					}
				},
				"StreamSaver": func(t *testing.T, ctx context.Context, inner *capable) {
					be := limit.New(inner, limit.NewLimiter(1), nil)
					if err := streamer.use(deadline(t, ctx), be); !isRateLimit(err) {
						t.Fatalf("SaveFrom of %d bytes at 1 byte/s: %v, want a rate limit error", objectSize, err)
					}
					if n := inner.count("savefrom"); n != 0 {
						t.Errorf("SaveFrom reached the inner backend %d times before the rate allowed it", n)
					}
				},
				// Removing temp files moves no bytes: not paced.
				"TempRemover": passedOnce(remover, func(be repo.Backend) repo.Backend {
					return limit.New(be, limit.NewLimiter(1), limit.NewLimiter(1))
				}),
				// Nor does a listing, as List is not.
				"PrefixLister": passedOnce(lister, func(be repo.Backend) repo.Backend {
					return limit.New(be, limit.NewLimiter(1), limit.NewLimiter(1))
				}),
				"PlacedReader": func(t *testing.T, ctx context.Context, inner *capable) {
					be := limit.New(inner, nil, limit.NewLimiter(1))
					if err := placedRd.use(deadline(t, ctx), be); !isRateLimit(err) {
						t.Fatalf("ReadPlaced of %d bytes at 1 byte/s: %v, want a rate limit error", objectSize, err)
					}
				},
			},
		},
		{
			name: "retry",
			wrap: func(t *testing.T, inner repo.Backend) repo.Backend { return retryFast(inner) },
			jobs: map[string]job{
				// Starting a spool is retried; its writes are one stream
				// and are not (retry.Backend.Spool).
				"Spooler": func(t *testing.T, ctx context.Context, inner *capable) {
					inner.failNext("spool", errTransient)
					if err := spooler.use(ctx, retryFast(inner)); err != nil {
						t.Fatalf("after one transient failure to start: %v", err)
					}
					if n := inner.count("spool"); n != 2 {
						t.Errorf("inner Spool called %d times, want 2", n)
					}
				},
				"StreamSaver":  retried(streamer),
				"TempRemover":  retried(remover),
				"PrefixLister": retried(lister),
				"PlacedReader": retried(placedRd),
			},
		},
		{
			name: "faulty",
			wrap: func(t *testing.T, inner repo.Backend) repo.Backend { return faulty.New(inner) },
			jobs: map[string]job{
				"Spooler": func(t *testing.T, ctx context.Context, inner *capable) {
					injected(spooler, faulty.OpSpool, repo.PackFile)(t, ctx, inner)
					// A spool's Commit is a save: failing it stores
					// nothing and aborts the spool beneath.
					injected(spooler, faulty.OpSave, repo.PackFile)(t, ctx, inner)
					if n := inner.count("abort"); n != 1 {
						t.Errorf("inner spool aborted %d times, want 1", n)
					}
					h := repo.Handle{Type: repo.PackFile, Name: repo.Hash(object).String()}
					if _, err := inner.Stat(ctx, h); !errors.Is(err, repo.ErrNotFound) {
						t.Errorf("stat %s after a failed commit: %v, want not found", h, err)
					}
				},
				"StreamSaver":  injected(streamer, faulty.OpSave, repo.IndexFile),
				"TempRemover":  injected(remover, faulty.OpRemoveTemp, ""),
				"PrefixLister": injected(lister, faulty.OpList, repo.SnapshotFile),
				"PlacedReader": func(t *testing.T, ctx context.Context, inner *capable) {
					injected(placedRd, faulty.OpLoad, repo.SnapshotFile)(t, ctx, inner)
				},
			},
		},
		{
			name: "SpoolToFiles",
			wrap: func(t *testing.T, inner repo.Backend) repo.Backend { return toFiles(inner) },
			owns: []string{"Spooler"},
			jobs: map[string]job{
				// Its own spool files, stored through the inner
				// backend's SaveFrom, never the inner spool.
				"Spooler": func(t *testing.T, ctx context.Context, inner *capable) {
					if err := spooler.use(ctx, toFiles(inner)); err != nil {
						t.Fatal(err)
					}
					if n, m := inner.count("spool"), inner.count("savefrom"); n != 0 || m != 1 {
						t.Errorf("inner Spool called %d times and SaveFrom %d, want 0 and 1", n, m)
					}
				},
				"StreamSaver":  passedOnce(streamer, toFiles),
				"TempRemover":  passedOnce(remover, toFiles),
				"PrefixLister": passedOnce(lister, toFiles),
				"PlacedReader": passedOnce(placedRd, toFiles),
			},
		},
	}
}

// TestWrappersKeepCapabilities: for every wrapper and every optional
// interface, the interface survives wrapping when the Backend beneath has
// it, is not claimed when it does not, reaches the Backend beneath, and
// still does the wrapper's job.
func TestWrappersKeepCapabilities(t *testing.T) {
	for _, w := range wrapperCases(t) {
		for _, c := range capabilities {
			t.Run(w.name+"/"+c.name, func(t *testing.T) {
				ctx := t.Context()
				newInner := func() *capable {
					inner := newCapable()
					if err := inner.Save(ctx, placedHandle, object); err != nil {
						t.Fatal(err)
					}
					return inner
				}
				var bare repo.Backend = struct{ repo.Backend }{mem.New()} // no optional interface
				if err := bare.Save(ctx, placedHandle, object); err != nil {
					t.Fatal(err)
				}
				owned := slices.Contains(w.owns, c.name)
				if got := c.has(t, w.wrap(t, bare)); got != owned {
					t.Errorf("over a backend without it: has %s = %v, want %v", c.name, got, owned)
				}
				inner := newInner()
				be := w.wrap(t, inner)
				if !c.has(t, be) {
					t.Fatalf("%s lost through %T", c.name, be)
				}
				if err := c.use(ctx, be); err != nil {
					t.Fatalf("use %s: %v", c.name, err)
				}
				if !owned && inner.count(c.innerOp) == 0 {
					t.Errorf("%s did not reach the inner backend", c.name)
				}
				j, ok := w.jobs[c.name]
				if !ok {
					t.Fatalf("wrapper %s has no test of what it does to %s: handle it (repo/wrap.go) and add one", w.name, c.name)
				}
				j(t, ctx, newInner())
			})
		}
	}
}

// TestWrappersStack: capabilities survive a stack of every wrapper, in
// either order.
func TestWrappersStack(t *testing.T) {
	cases := wrapperCases(t)
	for _, reverse := range []bool{false, true} {
		inner := newCapable()
		if err := inner.Save(t.Context(), placedHandle, object); err != nil {
			t.Fatal(err)
		}
		var be repo.Backend = inner
		for i := range cases {
			w := cases[i]
			if reverse {
				w = cases[len(cases)-1-i]
			}
			be = w.wrap(t, be)
		}
		for _, c := range capabilities {
			if !c.has(t, be) {
				t.Errorf("reverse %v: %s lost through the stack", reverse, c.name)
			}
		}
	}
}

// TestOptionalInterfacesKnown fails when package repo gains an interface
// that is neither in capabilities (so the wrappers are tested with it)
// nor known not to be optional.
func TestOptionalInterfacesKnown(t *testing.T) {
	pkgs, err := parser.ParseDir(token.NewFileSet(), ".", func(fi fs.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	known := slices.Clone(notOptional)
	for _, c := range capabilities {
		known = append(known, c.name)
	}
	var found []string
	for _, f := range pkgs["repo"].Files {
		ast.Inspect(f, func(n ast.Node) bool {
			if ts, ok := n.(*ast.TypeSpec); ok {
				if _, ok := ts.Type.(*ast.InterfaceType); ok {
					found = append(found, ts.Name.Name)
				}
			}
			return true
		})
	}
	for _, name := range found {
		if !slices.Contains(known, name) {
			t.Errorf("package repo has a new interface %s: if a Backend or its reader may implement it, make every wrapper handle it (repo/wrap.go) and add it to capabilities; else add it to notOptional", name)
		}
	}
	for _, name := range known {
		if !slices.Contains(found, name) {
			t.Errorf("interface %s is listed here but not in package repo", name)
		}
	}
}

// TestNoAssertionOfOptionalInterfaces: code finds a Backend's optional
// interfaces with repo.As, which sees through wrappers; a type assertion
// would miss them or find a wrapper's whose Backend beneath lacks it.
func TestNoAssertionOfOptionalInterfaces(t *testing.T) {
	backendLevel := []string{"Spooler", "StreamSaver", "TempRemover", "PrefixLister"}
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != ".." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			var types []ast.Expr
			switch n := n.(type) {
			case *ast.TypeAssertExpr:
				types = append(types, n.Type)
			case *ast.TypeSwitchStmt:
				for _, s := range n.Body.List {
					types = append(types, s.(*ast.CaseClause).List...)
				}
			}
			for _, e := range types {
				name := ""
				switch e := e.(type) {
				case *ast.Ident:
					name = e.Name
				case *ast.SelectorExpr:
					if x, ok := e.X.(*ast.Ident); ok && x.Name == "repo" {
						name = e.Sel.Name
					}
				}
				if slices.Contains(backendLevel, name) {
					t.Errorf("%s: type assertion to %s: use repo.As", fset.Position(e.Pos()), name)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
