package kubeenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// etcdClient speaks to etcd's JSON gateway (/v3/kv/...) on its client
// URL: what a reset needs, without a dependency on etcd's Go client.
type etcdClient struct {
	base string // http://127.0.0.1:<port>
}

// etcdOp is a put of value, or a delete, of one key.
type etcdOp struct {
	key    string
	value  []byte
	delete bool
}

// maxTxnOps stays under etcd's default --max-txn-ops (128).
const maxTxnOps = 100

// rangeAll returns every key and value in etcd.
func (e etcdClient) rangeAll(ctx context.Context) (map[string][]byte, error) {
	// key "\x00" with range_end "\x00": every key.
	req := map[string]any{"key": []byte{0}, "range_end": []byte{0}}
	var resp struct {
		KVs []struct {
			Key   []byte `json:"key"`
			Value []byte `json:"value"`
		} `json:"kvs"`
		More bool `json:"more"`
	}
	if err := e.call(ctx, "/v3/kv/range", req, &resp); err != nil {
		return nil, err
	}
	if resp.More {
		return nil, fmt.Errorf("etcd range: a partial answer")
	}
	out := make(map[string][]byte, len(resp.KVs))
	for _, kv := range resp.KVs {
		out[string(kv.Key)] = kv.Value
	}
	return out, nil
}

// apply runs ops in transactions of at most maxTxnOps.
func (e etcdClient) apply(ctx context.Context, ops []etcdOp) error {
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		var success []map[string]any
		for _, op := range ops[:n] {
			if op.delete {
				success = append(success, map[string]any{"request_delete_range": map[string]any{"key": []byte(op.key)}})
			} else {
				success = append(success, map[string]any{"request_put": map[string]any{"key": []byte(op.key), "value": op.value}})
			}
		}
		var resp struct {
			Succeeded bool `json:"succeeded"`
		}
		if err := e.call(ctx, "/v3/kv/txn", map[string]any{"success": success}, &resp); err != nil {
			return err
		}
		if !resp.Succeeded {
			return fmt.Errorf("etcd txn of %d operations did not succeed", n)
		}
		ops = ops[n:]
	}
	return nil
}

// call POSTs req as JSON ([]byte fields base64, as the gateway wants them)
// and decodes the answer into resp.
func (e etcdClient) call(ctx context.Context, path string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(e.base, "/")+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(hr)
	if err != nil {
		return fmt.Errorf("etcd %s: %w", path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("etcd %s: %w", path, err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: %s: %s", path, res.Status, bytes.TrimSpace(data))
	}
	if err := json.Unmarshal(data, resp); err != nil {
		return fmt.Errorf("etcd %s: decoding the answer: %w", path, err)
	}
	return nil
}
