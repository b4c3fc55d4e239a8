package main

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/tikv/client-go/v2/rawkv"
	"github.com/tikv/client-go/v2/txnkv"
)

// newRaw connects a raw client in the cluster's API version (in `keyspace` under V2).
func newRaw(ctx context.Context, o *options, keyspace string) (*rawkv.Client, error) {
	opts := []rawkv.ClientOpt{rawkv.WithAPIVersion(o.kvrpcAPIVersion())}
	if o.apiVersion == 2 {
		opts = append(opts, rawkv.WithKeyspace(keyspace))
	}
	return rawkv.NewClientWithOpts(ctx, o.pdAddrs(), opts...)
}

// newTxn connects a transactional client (a KVStore) in the cluster's API version.
func newTxn(o *options) (*txnkv.Client, error) {
	opts := []txnkv.ClientOpt{txnkv.WithAPIVersion(o.kvrpcAPIVersion())}
	if o.apiVersion == 2 {
		opts = append(opts, txnkv.WithKeyspace(o.keyspace))
	}
	return txnkv.NewClient(o.pdAddrs(), opts...)
}

// rawStorageKey is a user key as TiKV stores a raw key: under API V2 behind the keyspace's
// raw prefix ('r' and the keyspace id in 3 big-endian bytes).
func rawStorageKey(o *options, keyspaceID uint32, key []byte) []byte {
	if o.apiVersion != 2 {
		return key
	}
	var id [4]byte
	binary.BigEndian.PutUint32(id[:], keyspaceID)
	out := append([]byte{'r'}, id[1:]...)
	return append(out, key...)
}

// keyspaceID asks PD for the id of the configured keyspace (0 outside API V2).
func keyspaceID(ctx context.Context, o *options, raw *rawkv.Client) (uint32, error) {
	if o.apiVersion != 2 {
		return 0, nil
	}
	meta, err := raw.GetPDClient().LoadKeyspace(ctx, o.keyspace)
	if err != nil {
		return 0, fmt.Errorf("load keyspace %q: %w", o.keyspace, err)
	}
	return meta.GetId(), nil
}
