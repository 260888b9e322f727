package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/flagpole/flagpole/flags"
)

// DataFile is the name of the embedded store's file inside its data directory.
const DataFile = "flagpole-store.json"

const dataFormat = "flagpole-embedded-redis/1"

// OpenEmbedded starts an in-process Redis (miniredis) whose whole state is
// kept in dataDir/DataFile: loaded at start, and rewritten atomically (temp
// file, fsync, rename, fsync of the directory) before any write is
// acknowledged, so a restart keeps every environment, version, audit entry
// and key. o.URL is ignored. It is meant for a single process and modest data
// (every write rewrites the file); production uses a real Redis through Open.
// Errors: *flags.InputError for bad options, or a file that cannot be read,
// parsed or created.
func OpenEmbedded(ctx context.Context, dataDir string, o Options) (*Store, error) {
	if dataDir == "" {
		return nil, &flags.InputError{Field: "dataDir", Problem: "is required"}
	}
	if _, err := checkPrefix(o.Prefix); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the data directory: %w", err)
	}
	e := &embedded{m: miniredis.NewMiniRedis(), path: filepath.Join(dataDir, DataFile)}
	if err := e.load(); err != nil {
		return nil, err
	}
	// The file must be writable now, not at the first change.
	if err := e.persist(e.gen.Add(1)); err != nil {
		return nil, err
	}
	if err := e.m.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("starting the embedded redis: %w", err)
	}
	uo := &goredis.UniversalOptions{Addrs: []string{e.m.Addr()}}
	tune(uo)
	rdb := goredis.NewClient(uo.Simple())
	s, err := newStore(ctx, rdb, o)
	if err != nil {
		_ = rdb.Close()
		e.m.Close()
		return nil, err
	}
	s.emb = e
	return s, nil
}

// embedded is the in-process server and its file. Mutations run under mu's
// read lock; a dump takes the write lock, so it never sees half of a write.
type embedded struct {
	m    *miniredis.Miniredis
	path string

	mu  sync.RWMutex
	gen atomic.Uint64 // count of mutations

	fileMu sync.Mutex
	saved  uint64 // gen reflected in the file; under fileMu
}

// write runs fn (a mutation) and, when it succeeds, returns only once the
// state including it is on disk. Concurrent writers share one file write.
func (e *embedded) write(fn func() error) error {
	e.mu.RLock()
	err := fn()
	g := e.gen.Add(1)
	e.mu.RUnlock()
	if err != nil {
		return err
	}
	return e.persist(g)
}

// persist makes sure the file reflects at least mutation g.
func (e *embedded) persist(g uint64) error {
	e.fileMu.Lock()
	defer e.fileMu.Unlock()
	if e.saved >= g {
		return nil // another writer's file write already covered it
	}
	e.mu.Lock()
	cur := e.gen.Load()
	data, err := e.dump()
	e.mu.Unlock()
	if err == nil {
		err = writeFileAtomic(e.path, data)
	}
	if err != nil {
		return fmt.Errorf("the change is in memory but could not be written to %s: %v: %w", e.path, err, flags.ErrUnavailable)
	}
	e.saved = cur
	return nil
}

func (e *embedded) close() error {
	err := e.persist(e.gen.Add(1))
	e.m.Close()
	return err
}

// fileData is the data file: every key of the in-process server by type.
type fileData struct {
	Format string      `json:"format"`
	Keys   []fileEntry `json:"keys"`
}

type fileEntry struct {
	Key    string            `json:"key"`
	Type   string            `json:"type"`
	String *string           `json:"string,omitempty"`
	Hash   map[string]string `json:"hash,omitempty"`
	Set    []string          `json:"set,omitempty"`
	List   []string          `json:"list,omitempty"`
	ZSet   []zMember         `json:"zset,omitempty"`
}

type zMember struct {
	Member string  `json:"m"`
	Score  float64 `json:"s"`
}

func (e *embedded) dump() ([]byte, error) {
	fd := fileData{Format: dataFormat, Keys: []fileEntry{}}
	for _, k := range e.m.Keys() {
		fe := fileEntry{Key: k, Type: e.m.Type(k)}
		var err error
		switch fe.Type {
		case "string":
			var v string
			v, err = e.m.Get(k)
			fe.String = &v
		case "hash":
			var fields []string
			fields, err = e.m.HKeys(k)
			fe.Hash = make(map[string]string, len(fields))
			for _, f := range fields {
				fe.Hash[f] = e.m.HGet(k, f)
			}
		case "set":
			fe.Set, err = e.m.Members(k)
		case "list":
			fe.List, err = e.m.List(k)
		case "zset":
			var zs map[string]float64
			zs, err = e.m.SortedSet(k)
			fe.ZSet = make([]zMember, 0, len(zs))
			for m, sc := range zs {
				fe.ZSet = append(fe.ZSet, zMember{m, sc})
			}
			sort.Slice(fe.ZSet, func(i, j int) bool {
				a, b := fe.ZSet[i], fe.ZSet[j]
				return a.Score < b.Score || a.Score == b.Score && a.Member < b.Member
			})
		case "none":
			continue // gone between listing and reading
		default:
			err = fmt.Errorf("type %q is not supported", fe.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("reading key %q: %v", k, err)
		}
		fd.Keys = append(fd.Keys, fe)
	}
	return json.Marshal(fd)
}

func (e *embedded) load() error {
	data, err := os.ReadFile(e.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the embedded store: %w", err)
	}
	var fd fileData
	if err := json.Unmarshal(data, &fd); err != nil {
		return fmt.Errorf("the embedded store %s is damaged (%v); restore it from a backup or move it away", e.path, err)
	}
	if fd.Format != dataFormat {
		return fmt.Errorf("the embedded store %s has format %q, not %q", e.path, fd.Format, dataFormat)
	}
	for _, fe := range fd.Keys {
		var err error
		switch fe.Type {
		case "string":
			if fe.String != nil {
				err = e.m.Set(fe.Key, *fe.String)
			}
		case "hash":
			for f, v := range fe.Hash {
				e.m.HSet(fe.Key, f, v)
			}
		case "set":
			_, err = e.m.SetAdd(fe.Key, fe.Set...)
		case "list":
			_, err = e.m.Push(fe.Key, fe.List...)
		case "zset":
			for _, z := range fe.ZSet {
				if _, err = e.m.ZAdd(fe.Key, z.Score, z.Member); err != nil {
					break
				}
			}
		default:
			err = fmt.Errorf("type %q is not supported", fe.Type)
		}
		if err != nil {
			return fmt.Errorf("the embedded store %s is damaged at key %q: %v", e.path, fe.Key, err)
		}
	}
	return nil
}

// writeFileAtomic replaces path with data so that a crash leaves either the
// old or the new file, never a mix: temp file, fsync, rename, fsync the directory.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
