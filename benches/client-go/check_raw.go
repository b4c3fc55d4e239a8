package main

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc64"
	"strings"

	"github.com/tikv/client-go/v2/rawkv"
)

// Raw scenario keys are `<prefix>raw/<scenario>/<nnn>`, nnn from 000 to 019. client-go's
// raw client cannot split regions, so the caller splits the raw key space at
// `<prefix>raw/<scenario>/010` for the scenarios in rawSplitScenarios before the run (with
// tikv-sim's `--split-keys`, or another client); a scenario whose keys lie in one region
// fails and says so.
var rawSplitScenarios = []string{"batch", "scan", "delete_range", "checksum"}

const rawKeysPerScenario = 20

func rawKey(o *options, scenario string, i int) []byte {
	return []byte(fmt.Sprintf("%sraw/%s/%03d", o.prefix, scenario, i))
}

func rawValue(scenario string, i int) []byte {
	return []byte(fmt.Sprintf("value-%s-%d", scenario, i))
}

// rawCheck holds what the raw scenarios share.
type rawCheck struct {
	o          *options
	raw        *rawkv.Client
	keyspaceID uint32
}

func (c *rawCheck) scenarios() []scenario {
	list := []scenario{
		{"raw_get_put", c.getPut},
		{"raw_batch_get", c.batchGet},
		{"raw_ttl", c.ttl},
		{"raw_scan_across_regions", c.scan},
		{"raw_reverse_scan_across_regions", c.reverseScan},
		{"raw_delete_range", c.deleteRange},
		{"raw_cas_atomic", c.cas},
		{"raw_checksum", c.checksum},
	}
	if c.o.apiVersion == 2 && c.o.otherKeyspace != "" {
		list = append(list, scenario{"raw_v2_keyspace_isolation", c.keyspaceIsolation})
	}
	return list
}

// putScenarioKeys writes the scenario's 20 keys with one batch put.
func (c *rawCheck) putScenarioKeys(ctx context.Context, name string) ([][]byte, [][]byte, error) {
	keys := make([][]byte, rawKeysPerScenario)
	values := make([][]byte, rawKeysPerScenario)
	for i := range keys {
		keys[i] = rawKey(c.o, name, i)
		values[i] = rawValue(name, i)
	}
	return keys, values, c.raw.BatchPut(ctx, keys, values)
}

// spansRegions fails unless the first and last key live in different regions.
func (c *rawCheck) spansRegions(ctx context.Context, first, last []byte) error {
	pd := c.raw.GetPDClient()
	a, err := pd.GetRegion(ctx, first)
	if err != nil {
		return err
	}
	b, err := pd.GetRegion(ctx, last)
	if err != nil {
		return err
	}
	if a == nil || b == nil {
		return fmt.Errorf("PD knows no region for %q or %q", first, last)
	}
	if a.Meta.GetId() == b.Meta.GetId() {
		return fmt.Errorf("keys %q..%q lie in one region (%d); split the raw key space at %q first", first, last, a.Meta.GetId(), string(first[:len(first)-3])+"010")
	}
	return nil
}

func (c *rawCheck) getPut(ctx context.Context) error {
	key, value := rawKey(c.o, "get", 0), rawValue("get", 0)
	if err := c.raw.Put(ctx, key, value); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	got, err := c.raw.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if !bytes.Equal(got, value) {
		return fmt.Errorf("get returned %q, want %q", got, value)
	}
	missing, err := c.raw.Get(ctx, rawKey(c.o, "get", 1))
	if err != nil {
		return fmt.Errorf("get missing: %w", err)
	}
	if missing != nil {
		return fmt.Errorf("missing key read %q", missing)
	}
	if err := c.raw.Delete(ctx, key); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	if got, err := c.raw.Get(ctx, key); err != nil || got != nil {
		return fmt.Errorf("after delete: value %q, error %v", got, err)
	}
	return nil
}

func (c *rawCheck) batchGet(ctx context.Context) error {
	keys, values, err := c.putScenarioKeys(ctx, "batch")
	if err != nil {
		return fmt.Errorf("batch put: %w", err)
	}
	if err := c.spansRegions(ctx, keys[0], keys[len(keys)-1]); err != nil {
		return err
	}
	asked := append([][]byte{rawKey(c.o, "batch", 99)}, keys...)
	got, err := c.raw.BatchGet(ctx, asked)
	if err != nil {
		return fmt.Errorf("batch get: %w", err)
	}
	if len(got) != len(asked) {
		return fmt.Errorf("batch get returned %d values for %d keys", len(got), len(asked))
	}
	if got[0] != nil {
		return fmt.Errorf("missing key read %q", got[0])
	}
	for i, value := range values {
		if !bytes.Equal(got[i+1], value) {
			return fmt.Errorf("key %q read %q, want %q", keys[i], got[i+1], value)
		}
	}
	if err := c.raw.BatchDelete(ctx, keys[:5]); err != nil {
		return fmt.Errorf("batch delete: %w", err)
	}
	got, err = c.raw.BatchGet(ctx, keys[:6])
	if err != nil {
		return fmt.Errorf("batch get after delete: %w", err)
	}
	for i := 0; i < 5; i++ {
		if got[i] != nil {
			return fmt.Errorf("deleted key %q still reads %q", keys[i], got[i])
		}
	}
	if !bytes.Equal(got[5], values[5]) {
		return fmt.Errorf("kept key %q reads %q", keys[5], got[5])
	}
	return nil
}

func (c *rawCheck) ttl(ctx context.Context) error {
	key, value := rawKey(c.o, "ttl", 0), rawValue("ttl", 0)
	plain := rawKey(c.o, "ttl", 1)
	err := c.raw.PutWithTTL(ctx, key, value, 600)
	if c.o.apiVersion == 1 {
		// A V1 store without `enable-ttl` refuses a TTL (TiKV's TtlNotEnabled).
		if err == nil {
			return fmt.Errorf("put with TTL succeeded on an API V1 store without TTL")
		}
		if !strings.Contains(strings.ToLower(err.Error()), "ttl") {
			return fmt.Errorf("put with TTL failed, but not for TTL: %w", err)
		}
		return c.raw.Put(ctx, plain, value)
	}
	if err != nil {
		return fmt.Errorf("put with TTL: %w", err)
	}
	ttl, err := c.raw.GetKeyTTL(ctx, key)
	if err != nil {
		return fmt.Errorf("get TTL: %w", err)
	}
	if ttl == nil || *ttl == 0 || *ttl > 600 {
		return fmt.Errorf("TTL read back as %v, want 1..=600", ttl)
	}
	if got, err := c.raw.Get(ctx, key); err != nil || !bytes.Equal(got, value) {
		return fmt.Errorf("get of a key with TTL: %q, %v", got, err)
	}
	if err := c.raw.Put(ctx, plain, value); err != nil {
		return fmt.Errorf("put without TTL: %w", err)
	}
	ttl, err = c.raw.GetKeyTTL(ctx, plain)
	if err != nil {
		return fmt.Errorf("get TTL of a key without TTL: %w", err)
	}
	if ttl == nil || *ttl != 0 {
		return fmt.Errorf("a key without TTL has TTL %v, want 0", ttl)
	}
	missing, err := c.raw.GetKeyTTL(ctx, rawKey(c.o, "ttl", 2))
	if err != nil || missing != nil {
		return fmt.Errorf("TTL of a missing key: %v, %v", missing, err)
	}
	return nil
}

func (c *rawCheck) scan(ctx context.Context) error {
	keys, values, err := c.putScenarioKeys(ctx, "scan")
	if err != nil {
		return fmt.Errorf("batch put: %w", err)
	}
	if err := c.spansRegions(ctx, keys[0], keys[len(keys)-1]); err != nil {
		return err
	}
	end := []byte(fmt.Sprintf("%sraw/scan/~", c.o.prefix))
	gotKeys, gotValues, err := c.raw.Scan(ctx, keys[0], end, 100)
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	if err := samePairs(gotKeys, gotValues, keys, values); err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	// A limit that ends inside the second region.
	gotKeys, _, err = c.raw.Scan(ctx, keys[3], end, 12)
	if err != nil {
		return fmt.Errorf("scan with limit: %w", err)
	}
	if len(gotKeys) != 12 || !bytes.Equal(gotKeys[0], keys[3]) || !bytes.Equal(gotKeys[11], keys[14]) {
		return fmt.Errorf("scan from key 3 with limit 12 returned %d keys", len(gotKeys))
	}
	onlyKeys, onlyValues, err := c.raw.Scan(ctx, keys[0], end, 100, rawkv.ScanKeyOnly())
	if err != nil {
		return fmt.Errorf("key-only scan: %w", err)
	}
	if len(onlyKeys) != len(keys) {
		return fmt.Errorf("key-only scan returned %d keys, want %d", len(onlyKeys), len(keys))
	}
	for _, v := range onlyValues {
		if len(v) != 0 {
			return fmt.Errorf("key-only scan returned a value %q", v)
		}
	}
	return nil
}

func (c *rawCheck) reverseScan(ctx context.Context) error {
	// The scan scenario wrote the keys; write them again so this one stands alone.
	keys, values, err := c.putScenarioKeys(ctx, "scan")
	if err != nil {
		return fmt.Errorf("batch put: %w", err)
	}
	start := []byte(fmt.Sprintf("%sraw/scan/~", c.o.prefix))
	gotKeys, gotValues, err := c.raw.ReverseScan(ctx, start, keys[0], 100)
	if err != nil {
		return fmt.Errorf("reverse scan: %w", err)
	}
	reversedKeys := make([][]byte, len(keys))
	reversedValues := make([][]byte, len(values))
	for i := range keys {
		reversedKeys[len(keys)-1-i] = keys[i]
		reversedValues[len(keys)-1-i] = values[i]
	}
	if err := samePairs(gotKeys, gotValues, reversedKeys, reversedValues); err != nil {
		return fmt.Errorf("reverse scan: %w", err)
	}
	// Reverse scans run from just below their start key: key 15 itself is excluded.
	gotKeys, _, err = c.raw.ReverseScan(ctx, keys[15], keys[0], 10)
	if err != nil {
		return fmt.Errorf("reverse scan with limit: %w", err)
	}
	if len(gotKeys) != 10 || !bytes.Equal(gotKeys[0], keys[14]) || !bytes.Equal(gotKeys[9], keys[5]) {
		return fmt.Errorf("reverse scan below key 15 with limit 10 returned %d keys", len(gotKeys))
	}
	return nil
}

func (c *rawCheck) deleteRange(ctx context.Context) error {
	keys, _, err := c.putScenarioKeys(ctx, "delete_range")
	if err != nil {
		return fmt.Errorf("batch put: %w", err)
	}
	if err := c.spansRegions(ctx, keys[0], keys[len(keys)-1]); err != nil {
		return err
	}
	if err := c.raw.DeleteRange(ctx, keys[2], keys[18]); err != nil {
		return fmt.Errorf("delete range: %w", err)
	}
	end := []byte(fmt.Sprintf("%sraw/delete_range/~", c.o.prefix))
	left, _, err := c.raw.Scan(ctx, keys[0], end, 100)
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	want := [][]byte{keys[0], keys[1], keys[18], keys[19]}
	if len(left) != len(want) {
		return fmt.Errorf("%d keys left after delete range, want %d", len(left), len(want))
	}
	for i := range want {
		if !bytes.Equal(left[i], want[i]) {
			return fmt.Errorf("key %d left is %q, want %q", i, left[i], want[i])
		}
	}
	return nil
}

func (c *rawCheck) cas(ctx context.Context) error {
	c.raw.SetAtomicForCAS(true)
	defer c.raw.SetAtomicForCAS(false)
	key := rawKey(c.o, "cas", 0)
	previous, swapped, err := c.raw.CompareAndSwap(ctx, key, nil, []byte("first"))
	if err != nil {
		return fmt.Errorf("CAS on a missing key: %w", err)
	}
	if !swapped || previous != nil {
		return fmt.Errorf("CAS on a missing key: swapped %v, previous %q", swapped, previous)
	}
	previous, swapped, err = c.raw.CompareAndSwap(ctx, key, []byte("wrong"), []byte("second"))
	if err != nil {
		return fmt.Errorf("CAS with a wrong previous value: %w", err)
	}
	if swapped || !bytes.Equal(previous, []byte("first")) {
		return fmt.Errorf("CAS with a wrong previous value: swapped %v, previous %q", swapped, previous)
	}
	previous, swapped, err = c.raw.CompareAndSwap(ctx, key, []byte("first"), []byte("second"))
	if err != nil {
		return fmt.Errorf("CAS: %w", err)
	}
	if !swapped || !bytes.Equal(previous, []byte("first")) {
		return fmt.Errorf("CAS: swapped %v, previous %q", swapped, previous)
	}
	_, swapped, err = c.raw.CompareAndSwap(ctx, key, nil, []byte("third"))
	if err != nil || swapped {
		return fmt.Errorf("CAS expecting no key on an existing key: swapped %v, error %v", swapped, err)
	}
	got, err := c.raw.Get(ctx, key)
	if err != nil || !bytes.Equal(got, []byte("second")) {
		return fmt.Errorf("after CAS: %q, %v", got, err)
	}
	return nil
}

func (c *rawCheck) checksum(ctx context.Context) error {
	keys, values, err := c.putScenarioKeys(ctx, "checksum")
	if err != nil {
		return fmt.Errorf("batch put: %w", err)
	}
	if err := c.spansRegions(ctx, keys[0], keys[len(keys)-1]); err != nil {
		return err
	}
	end := []byte(fmt.Sprintf("%sraw/checksum/~", c.o.prefix))
	got, err := c.raw.Checksum(ctx, keys[0], end)
	if err != nil {
		return fmt.Errorf("checksum: %w", err)
	}
	// TiKV sums the CRC-64 (ECMA) of each stored key (with its API V2 prefix) and value.
	table := crc64.MakeTable(crc64.ECMA)
	var want uint64
	var wantBytes uint64
	for i := range keys {
		stored := rawStorageKey(c.o, c.keyspaceID, keys[i])
		pair := append(append([]byte{}, stored...), values[i]...)
		want ^= crc64.Checksum(pair, table)
		wantBytes += uint64(len(pair))
	}
	if got.TotalKvs != uint64(len(keys)) || got.TotalBytes != wantBytes || got.Crc64Xor != want {
		return fmt.Errorf("checksum %+v, want {Crc64Xor:%d TotalKvs:%d TotalBytes:%d}", got, want, len(keys), wantBytes)
	}
	return nil
}

func (c *rawCheck) keyspaceIsolation(ctx context.Context) error {
	other, err := newRaw(ctx, c.o, c.o.otherKeyspace)
	if err != nil {
		return fmt.Errorf("connect to keyspace %q: %w", c.o.otherKeyspace, err)
	}
	defer other.Close()
	key := rawKey(c.o, "isolation", 0)
	if err := c.raw.Put(ctx, key, []byte("mine")); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	got, err := other.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("get from the other keyspace: %w", err)
	}
	if got != nil {
		return fmt.Errorf("keyspace %q reads %q written in %q", c.o.otherKeyspace, got, c.o.keyspace)
	}
	if err := other.Put(ctx, key, []byte("theirs")); err != nil {
		return fmt.Errorf("put in the other keyspace: %w", err)
	}
	mine, err := c.raw.Get(ctx, key)
	if err != nil || !bytes.Equal(mine, []byte("mine")) {
		return fmt.Errorf("own value after the other keyspace wrote: %q, %v", mine, err)
	}
	return nil
}

func samePairs(gotKeys, gotValues, keys, values [][]byte) error {
	if len(gotKeys) != len(keys) || len(gotValues) != len(values) {
		return fmt.Errorf("%d pairs, want %d", len(gotKeys), len(keys))
	}
	for i := range keys {
		if !bytes.Equal(gotKeys[i], keys[i]) || !bytes.Equal(gotValues[i], values[i]) {
			return fmt.Errorf("pair %d is %q=%q, want %q=%q", i, gotKeys[i], gotValues[i], keys[i], values[i])
		}
	}
	return nil
}
