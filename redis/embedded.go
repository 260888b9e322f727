package redis

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/flagpole/flagpole/flags"
)

// Files of the embedded store inside its data directory.
const (
	// DataFile is the snapshot: every key of the embedded server.
	DataFile = "flagpole-store.json"
	// JournalFile holds the writes made since the snapshot, one JSON line each.
	JournalFile = "flagpole-store.journal"
	lockFile    = "flagpole-store.lock"
)

const dataFormat = "flagpole-embedded-redis/1"

// minCompact is the journal size that triggers a new snapshot when the
// snapshot itself is smaller; otherwise the journal may grow to the
// snapshot's size, so rewriting the snapshot costs O(1) per write amortised.
const minCompact = 1 << 20

// OpenEmbedded starts an in-process Redis (miniredis) whose state lives in
// dataDir: a snapshot (DataFile) plus a journal of the writes since
// (JournalFile). A write is acknowledged only after its journal record is
// fsynced; the snapshot is rewritten atomically (temp file, fsync, rename,
// fsync of the directory) when the journal has grown as large as it, and at
// start and Close. A restart replays the journal, so it keeps every
// environment, version, audit entry and key. o.URL is ignored. One process
// at a time may use a data directory. Production uses a real Redis through
// Open.
//
// Errors: *flags.InputError for bad options; an error naming the file when
// the directory is in use, or its files cannot be read, parsed, replayed or
// written.
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
	unlock, err := lockDir(filepath.Join(dataDir, lockFile))
	if err != nil {
		return nil, err
	}
	e := &embedded{
		m:        miniredis.NewMiniRedis(),
		snapPath: filepath.Join(dataDir, DataFile), journalPath: filepath.Join(dataDir, JournalFile),
		unlock: unlock,
	}
	s, err := e.open(ctx, o)
	if err != nil {
		e.m.Close()
		if e.journal != nil {
			e.journal.Close()
		}
		unlock()
		return nil, err
	}
	return s, nil
}

func (e *embedded) open(ctx context.Context, o Options) (*Store, error) {
	snapSeq, err := e.loadSnapshot()
	if err != nil {
		return nil, err
	}
	if err := e.m.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("starting the embedded redis: %w", err)
	}
	uo := &goredis.UniversalOptions{Addrs: []string{e.m.Addr()}}
	tune(uo)
	rdb := goredis.NewClient(uo.Simple())
	e.seq = snapSeq
	if err := e.replay(ctx, rdb, snapSeq); err != nil {
		rdb.Close()
		return nil, err
	}
	if e.journal, err = os.OpenFile(e.journalPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("opening the journal: %w", err)
	}
	// Start from a fresh snapshot and an empty journal; this also proves the
	// directory writable before any write is accepted.
	e.mu.Lock()
	err = e.compactLocked()
	e.mu.Unlock()
	if err != nil {
		rdb.Close()
		return nil, err
	}
	s, err := newStore(ctx, rdb, o)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	s.emb = e
	return s, nil
}

// embedded is the in-process server and its files.
type embedded struct {
	m                     *miniredis.Miniredis
	snapPath, journalPath string
	unlock                func()

	// mu orders every mutation with its journal record, and excludes
	// mutations while a snapshot is taken.
	mu        sync.Mutex
	journal   *os.File
	seq       uint64 // last journal record written
	jsize     int64  // bytes in the journal
	compactAt int64
	broken    error // once the journal cannot be written, every write is refused

	syncMu  sync.Mutex
	synced  uint64        // last record known durable; under syncMu
	written atomic.Uint64 // last record handed to the journal file
}

// effects collects the changes one store operation made, as replayable
// records; a nil *effects (a non-embedded store) discards them.
type effects struct{ recs []record }

// record is one journal line: a script run or a plain command.
type record struct {
	Seq    uint64 `json:"seq"`
	Script string `json:"script,omitempty"`
	Keys   []blob `json:"keys,omitempty"`
	Args   []blob `json:"args"`
}

var scriptNames = map[*goredis.Script]string{
	writeScript: "write", deleteScript: "delete", createKeyScript: "createKey", revokeKeyScript: "revokeKey",
}

func (fx *effects) script(sc *goredis.Script, keys []string, args []any) {
	if fx == nil {
		return
	}
	r := record{Script: scriptNames[sc], Args: blobs(args)}
	for _, k := range keys {
		r.Keys = append(r.Keys, blob(k))
	}
	fx.recs = append(fx.recs, r)
}

func (fx *effects) command(args ...any) {
	if fx != nil {
		fx.recs = append(fx.recs, record{Args: blobs(args)})
	}
}

func blobs(args []any) []blob {
	out := make([]blob, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			out[i] = blob(v)
		case []byte:
			out[i] = blob(v)
		case int:
			out[i] = blob(strconv.Itoa(v))
		default:
			out[i] = blob(fmt.Sprint(v))
		}
	}
	return out
}

// blob is a byte string in JSON: a JSON string when it is valid UTF-8,
// otherwise {"b64": "..."}.
type blob string

func (b blob) MarshalJSON() ([]byte, error) {
	if utf8.ValidString(string(b)) {
		return json.Marshal(string(b))
	}
	return json.Marshal(map[string]string{"b64": base64.StdEncoding.EncodeToString([]byte(b))})
}

func (b *blob) UnmarshalJSON(d []byte) error {
	var s string
	if err := json.Unmarshal(d, &s); err == nil {
		*b = blob(s)
		return nil
	}
	var m struct{ B64 string }
	if err := json.Unmarshal(d, &m); err != nil {
		return err
	}
	raw, err := base64.StdEncoding.DecodeString(m.B64)
	*b = blob(raw)
	return err
}

// write runs fn, a mutation, with the journal held, and returns once the
// records of what it changed are on disk.
func (e *embedded) write(fn func(*effects) error) error {
	e.mu.Lock()
	if e.broken != nil {
		e.mu.Unlock()
		return fmt.Errorf("the embedded store refuses writes since its journal failed: %v: %w", e.broken, flags.ErrUnavailable)
	}
	var fx effects
	err := fn(&fx)
	var werr error
	if len(fx.recs) > 0 {
		werr = e.appendLocked(fx.recs)
		if werr == nil && e.jsize >= e.compactAt {
			werr = e.compactLocked()
		}
		if werr != nil {
			e.broken = werr
		}
	}
	mine := e.seq
	e.mu.Unlock()
	if werr != nil {
		return fmt.Errorf("the change could not be written to %s: %v: %w", e.journalPath, werr, flags.ErrUnavailable)
	}
	if len(fx.recs) > 0 {
		if serr := e.sync(mine); serr != nil {
			return fmt.Errorf("the change could not be flushed to %s: %v: %w", e.journalPath, serr, flags.ErrUnavailable)
		}
	}
	return err
}

func (e *embedded) appendLocked(recs []record) error {
	var buf bytes.Buffer
	seq := e.seq
	for _, r := range recs {
		seq++
		r.Seq = seq
		line, err := json.Marshal(r)
		if err != nil {
			return err
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	n, err := e.journal.Write(buf.Bytes())
	e.jsize += int64(n)
	if err != nil {
		return err
	}
	e.seq = seq
	e.written.Store(seq)
	return nil
}

// sync makes records up to mine durable; one fsync covers every record
// written before it, so concurrent writers share it.
func (e *embedded) sync(mine uint64) error {
	e.syncMu.Lock()
	defer e.syncMu.Unlock()
	if e.synced >= mine {
		return nil
	}
	target := e.written.Load()
	if err := e.journal.Sync(); err != nil {
		return err
	}
	e.synced = target
	return nil
}

// compactLocked writes a snapshot of everything up to e.seq and empties the
// journal. A crash between the two leaves journal records the snapshot
// already holds; their sequence numbers make the replay skip them.
func (e *embedded) compactLocked() error {
	e.syncMu.Lock()
	defer e.syncMu.Unlock()
	data, err := e.dump()
	if err != nil {
		return err
	}
	if err := writeFileAtomic(e.snapPath, data); err != nil {
		return err
	}
	if err := e.journal.Truncate(0); err != nil {
		return err
	}
	if err := e.journal.Sync(); err != nil {
		return err
	}
	e.jsize = 0
	e.compactAt = max(minCompact, int64(len(data)))
	e.synced = e.seq
	return nil
}

func (e *embedded) close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var err error
	if e.broken == nil {
		err = e.compactLocked()
	}
	err = errors.Join(err, e.journal.Close())
	e.m.Close()
	e.unlock()
	return err
}

// fileData is the snapshot: every key of the in-process server by type, and
// the last journal record it includes.
type fileData struct {
	Format string      `json:"format"`
	Seq    uint64      `json:"seq"`
	Keys   []fileEntry `json:"keys"`
}

type fileEntry struct {
	Key    blob          `json:"key"`
	Type   string        `json:"type"`
	String *blob         `json:"string,omitempty"`
	Hash   map[blob]blob `json:"hash,omitempty"`
	Set    []blob        `json:"set,omitempty"`
	List   []blob        `json:"list,omitempty"`
	ZSet   []zMember     `json:"zset,omitempty"`
	Stream []streamEntry `json:"stream,omitempty"`
}

type zMember struct {
	Member blob    `json:"m"`
	Score  float64 `json:"s"`
}

func (e *embedded) dump() ([]byte, error) {
	fd := fileData{Format: dataFormat, Seq: e.seq, Keys: []fileEntry{}}
	for _, k := range e.m.Keys() {
		fe := fileEntry{Key: blob(k), Type: e.m.Type(k)}
		var err error
		switch fe.Type {
		case "string":
			var v string
			v, err = e.m.Get(k)
			b := blob(v)
			fe.String = &b
		case "hash":
			var fields []string
			fields, err = e.m.HKeys(k)
			fe.Hash = make(map[blob]blob, len(fields))
			for _, f := range fields {
				fe.Hash[blob(f)] = blob(e.m.HGet(k, f))
			}
		case "set":
			var ms []string
			ms, err = e.m.Members(k)
			fe.Set = toBlobs(ms)
		case "list":
			var ls []string
			ls, err = e.m.List(k)
			fe.List = toBlobs(ls)
		case "zset":
			var zs map[string]float64
			zs, err = e.m.SortedSet(k)
			fe.ZSet = make([]zMember, 0, len(zs))
			for m, sc := range zs {
				fe.ZSet = append(fe.ZSet, zMember{blob(m), sc})
			}
			slices.SortFunc(fe.ZSet, func(a, b zMember) int {
				if a.Score != b.Score {
					if a.Score < b.Score {
						return -1
					}
					return 1
				}
				return compareBlob(a.Member, b.Member)
			})
		case "stream":
			fe.Stream, err = dumpStream(e.m, k)
		case "none":
			continue
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

func compareBlob(a, b blob) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func toBlobs(ss []string) []blob {
	out := make([]blob, len(ss))
	for i, s := range ss {
		out[i] = blob(s)
	}
	return out
}

func fromBlobs(bs []blob) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = string(b)
	}
	return out
}

// loadSnapshot fills the server from the snapshot and returns the last
// journal record it includes.
func (e *embedded) loadSnapshot() (uint64, error) {
	data, err := os.ReadFile(e.snapPath)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading the embedded store: %w", err)
	}
	var fd fileData
	if err := json.Unmarshal(data, &fd); err != nil {
		return 0, fmt.Errorf("the embedded store %s is damaged (%v); restore it from a backup or move it away", e.snapPath, err)
	}
	if fd.Format != dataFormat {
		return 0, fmt.Errorf("the embedded store %s has format %q, not %q", e.snapPath, fd.Format, dataFormat)
	}
	for _, fe := range fd.Keys {
		k := string(fe.Key)
		var err error
		switch fe.Type {
		case "string":
			if fe.String != nil {
				err = e.m.Set(k, string(*fe.String))
			}
		case "hash":
			for f, v := range fe.Hash {
				e.m.HSet(k, string(f), string(v))
			}
		case "set":
			_, err = e.m.SetAdd(k, fromBlobs(fe.Set)...)
		case "list":
			_, err = e.m.Push(k, fromBlobs(fe.List)...)
		case "zset":
			for _, z := range fe.ZSet {
				if _, err = e.m.ZAdd(k, z.Score, string(z.Member)); err != nil {
					break
				}
			}
		case "stream":
			err = loadStream(e.m, k, fe.Stream)
		default:
			err = fmt.Errorf("type %q is not supported", fe.Type)
		}
		if err != nil {
			return 0, fmt.Errorf("the embedded store %s is damaged at key %q: %v", e.snapPath, k, err)
		}
	}
	return fd.Seq, nil
}

// replay applies the journal records after the snapshot's. A last line cut
// short by a crash was never acknowledged and is dropped; damage anywhere
// else is an error.
func (e *embedded) replay(ctx context.Context, rdb *goredis.Client, after uint64) error {
	f, err := os.Open(e.journalPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the journal: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for lineNo := 1; ; lineNo++ {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return nil // an empty or unterminated last line: a torn, unacknowledged write
		}
		if err != nil {
			return fmt.Errorf("reading the journal: %w", err)
		}
		var rec record
		if jerr := json.Unmarshal(line, &rec); jerr != nil {
			if _, perr := r.Peek(1); perr == io.EOF {
				return nil // torn last record
			}
			return fmt.Errorf("the journal %s is damaged at line %d: %v", e.journalPath, lineNo, jerr)
		}
		if rec.Seq <= after {
			continue
		}
		if rec.Seq != e.seq+1 {
			return fmt.Errorf("the journal %s skips from record %d to %d at line %d", e.journalPath, e.seq, rec.Seq, lineNo)
		}
		if err := applyRecord(ctx, rdb, rec); err != nil {
			return fmt.Errorf("replaying record %d of %s: %v", rec.Seq, e.journalPath, err)
		}
		e.seq = rec.Seq
	}
}

func applyRecord(ctx context.Context, rdb *goredis.Client, rec record) error {
	args := make([]any, len(rec.Args))
	for i, a := range rec.Args {
		args[i] = string(a)
	}
	if rec.Script == "" {
		if len(args) == 0 {
			return errors.New("an empty command")
		}
		return rdb.Do(ctx, args...).Err()
	}
	var sc *goredis.Script
	for s, name := range scriptNames {
		if name == rec.Script {
			sc = s
		}
	}
	if sc == nil {
		return fmt.Errorf("unknown script %q", rec.Script)
	}
	res, err := sc.Run(ctx, rdb, fromBlobs(rec.Keys), args...).Result()
	if err != nil {
		return err
	}
	// Every recorded run succeeded the first time; from the same state it
	// must succeed again.
	ok := false
	switch v := res.(type) {
	case int64:
		ok = v == 1
	case []any:
		ok = len(v) > 0 && v[0] == "ok"
	}
	if !ok {
		return fmt.Errorf("script %s did not apply again (reply %v); the journal does not match the snapshot", rec.Script, res)
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
