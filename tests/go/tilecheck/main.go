// tilecheck reads a C2SP tlog-tiles log with golang.org/x/mod/sumdb/tlog and
// golang.org/x/mod/sumdb/note (Debian's golang-golang-x-mod-dev, built offline in
// GOPATH mode): an implementation govledger did not write, used as a second opinion on
// the tiles govledger serves (tests/integration/test_tiles_go.py).
//
// It verifies the checkpoint under the vkey with note.Open, the tree hash from the tiles
// with tlog.TileHashReader (which authenticates every tile it loads against the tree
// hash), every entry of every entry bundle against the level-0 hashes, inclusion proofs
// for a sample of leaves and consistency proofs (tlog.ProveTree/CheckTree) to each older
// tree given with -old SIZE:HEXROOT. Tile paths come from Go's own Tile.Path with the
// height element dropped (tile/8/0/x001/234 -> tile/0/x001/234; tile/8/data/... ->
// tile/entries/...). Over HTTP, $TILECHECK_AUTHORIZATION (if set) is sent as the
// Authorization header. Prints one JSON line; exits 1 on the first failure.
package main

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const height = 8

type olds []string

func (o *olds) String() string     { return strings.Join(*o, ",") }
func (o *olds) Set(s string) error { *o = append(*o, s); return nil }

func fetch(base, path string) ([]byte, error) {
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return os.ReadFile(filepath.Join(base, filepath.FromSlash(path)))
	}
	req, err := http.NewRequest("GET", strings.TrimSuffix(base, "/")+"/"+path, nil)
	if err != nil {
		return nil, err
	}
	// Entry bundles hold every tenant's events: govledger serves them to a reader of
	// tenant * only (its Authorization header value, e.g. "Bearer glt_...").
	if auth := os.Getenv("TILECHECK_AUTHORIZATION"); auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return body, nil
}

func c2spPath(t tlog.Tile) string {
	p := t.Path()
	if t.L == -1 {
		return strings.Replace(p, "tile/8/data/", "tile/entries/", 1)
	}
	return strings.Replace(p, "tile/8/", "tile/", 1)
}

// reader fetches each tile once: TileHashReader asks again for every ReadHashes call and
// re-authenticates what it gets each time, so a cache of the raw bytes loses no check.
type reader struct {
	base    string
	fetched int
	cache   map[string][]byte
}

func (r *reader) Height() int { return height }

func (r *reader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, ok := r.cache[c2spPath(t)]
		if !ok {
			var err error
			data, err = fetch(r.base, c2spPath(t))
			if err != nil {
				return nil, err
			}
			r.cache[c2spPath(t)] = data
			r.fetched++
		}
		if len(data) != t.W*tlog.HashSize {
			return nil, fmt.Errorf("%s: %d bytes, want %d", c2spPath(t), len(data), t.W*tlog.HashSize)
		}
		out[i] = data
	}
	return out, nil
}

func (r *reader) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

func fail(format string, args ...interface{}) {
	out, _ := json.Marshal(map[string]interface{}{"ok": false, "error": fmt.Sprintf(format, args...)})
	fmt.Println(string(out))
	os.Exit(1)
}

func openCheckpoint(base, vkey string) (string, tlog.Tree) {
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		fail("vkey: %v", err)
	}
	raw, err := fetch(base, "checkpoint")
	if err != nil {
		fail("checkpoint: %v", err)
	}
	n, err := note.Open(raw, note.VerifierList(verifier))
	if err != nil {
		fail("checkpoint signature: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		fail("checkpoint body has %d lines", len(lines))
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("checkpoint size: %v", err)
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		fail("checkpoint root: %v", err)
	}
	var hash tlog.Hash
	copy(hash[:], root)
	return lines[0], tlog.Tree{N: size, Hash: hash}
}

func checkBundles(base string, tree tlog.Tree, hr tlog.HashReader) int64 {
	var checked int64
	for n := int64(0); n*(1<<height) < tree.N; n++ {
		w := tree.N - n*(1<<height)
		if w > 1<<height {
			w = 1 << height
		}
		bundle := tlog.Tile{H: height, L: -1, N: n, W: int(w)}
		data, err := fetch(base, c2spPath(bundle))
		if err != nil {
			fail("bundle: %v", err)
		}
		indexes := make([]int64, w)
		for i := range indexes {
			indexes[i] = tlog.StoredHashIndex(0, n*(1<<height)+int64(i))
		}
		hashes, err := hr.ReadHashes(indexes)
		if err != nil {
			fail("level-0 hashes of bundle %d: %v", n, err)
		}
		for i := 0; i < int(w); i++ {
			if len(data) < 2 || len(data) < 2+int(binary.BigEndian.Uint16(data)) {
				fail("%s: truncated at entry %d", c2spPath(bundle), i)
			}
			length := int(binary.BigEndian.Uint16(data))
			if tlog.RecordHash(data[2:2+length]) != hashes[i] {
				fail("%s: entry %d does not hash to its level-0 tile hash", c2spPath(bundle), i)
			}
			data = data[2+length:]
			checked++
		}
		if len(data) != 0 {
			fail("%s: %d bytes after the last entry", c2spPath(bundle), len(data))
		}
	}
	return checked
}

func main() {
	base := flag.String("base", "", "tlog-tiles prefix: http(s) URL or a directory")
	vkey := flag.String("vkey", "", "the log's note verifier key")
	var older olds
	flag.Var(&older, "old", "SIZE:HEXROOT of an older tree to prove consistency with (repeatable)")
	flag.Parse()
	origin, tree := openCheckpoint(*base, *vkey)
	tr := &reader{base: *base, cache: map[string][]byte{}}
	hr := tlog.TileHashReader(tree, tr)
	th, err := tlog.TreeHash(tree.N, hr)
	if err != nil {
		fail("tree hash from tiles: %v", err)
	}
	if th != tree.Hash {
		fail("tree hash from tiles %s != checkpoint %s", th, tree.Hash)
	}
	entries := checkBundles(*base, tree, hr)
	proofs := 0
	for i := int64(0); i < tree.N; i += 1 + tree.N/97 {
		for _, n := range []int64{i, tree.N - 1 - i} {
			p, err := tlog.ProveRecord(tree.N, n, hr)
			if err != nil {
				fail("prove record %d: %v", n, err)
			}
			leaf, err := hr.ReadHashes([]int64{tlog.StoredHashIndex(0, n)})
			if err != nil {
				fail("leaf hash %d: %v", n, err)
			}
			if err := tlog.CheckRecord(p, tree.N, tree.Hash, n, leaf[0]); err != nil {
				fail("check record %d: %v", n, err)
			}
			proofs++
		}
	}
	for _, old := range older {
		parts := strings.SplitN(old, ":", 2)
		size, err := strconv.ParseInt(parts[0], 10, 64)
		raw, err2 := hex.DecodeString(parts[1])
		if err != nil || err2 != nil || len(raw) != tlog.HashSize {
			fail("bad -old %q", old)
		}
		var oldHash tlog.Hash
		copy(oldHash[:], raw)
		p, err := tlog.ProveTree(tree.N, size, hr)
		if err != nil {
			fail("prove tree %d: %v", size, err)
		}
		if err := tlog.CheckTree(p, tree.N, tree.Hash, size, oldHash); err != nil {
			fail("check tree %d -> %d: %v", size, tree.N, err)
		}
		proofs++
	}
	out, _ := json.Marshal(map[string]interface{}{
		"ok": true, "origin": origin, "size": tree.N, "root": hex.EncodeToString(tree.Hash[:]),
		"entries": entries, "proofs": proofs, "tiles_fetched": tr.fetched,
	})
	fmt.Println(string(out))
}
