package agent

import "bytes"

// fileGrowth is the spare room a new ca-crl.pem gets past its end, as a
// share of its size (plus fileGrowthMin): room for the CRLs the next
// changes add. A root prepared, a cluster joined, an intermediate renewed:
// each adds one CRL at the end of the file and keeps the rest. At 1,000
// clusters the file is ~0.5 MB; copying it for each such change was a fifth
// of the agents' CPU in a prepare's fan-out, and about half of what they
// allocated per change (docs/performance.md, session 29).
const (
	fileGrowth    = 16 // 1/16: ~64 KiB, ~130 CRLs, for a 1 MB file
	fileGrowthMin = 4 << 10
)

// joinFile is the ca-crl.pem made of parts, in order. When parts[0] is the
// whole of the last file joinFile made (the Secret's file, which the plan
// keeps and adds to) and that file has room for the rest, the rest is
// written into its spare room and the file is not copied. The file
// returned is capped at its length, so no one else can write past it;
// the spare room is written once, by the one join that extends the last
// file: another join from the same file (a plan made again after a
// refused write) copies it. Earlier files are never changed: each is a
// prefix of the array, which they see only up to their own length.
//
// The cache keeps the last file (the Secret holds it too): a Secret
// changed by someone else leaves it held until the next plan.
func (c *crlCache) joinFile(parts [][]byte) []byte {
	if c == nil {
		return bytes.Join(parts, nil)
	}
	total := 0
	for _, p := range parts {
		total += len(p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.grown
	var out []byte
	if len(parts) > 0 && len(g) > 0 && len(parts[0]) == len(g) && &parts[0][0] == &g[0] && cap(g) >= total {
		out = g
		parts = parts[1:]
		c.grewInPlace++
	} else {
		out = make([]byte, 0, total+total/fileGrowth+fileGrowthMin)
	}
	for _, p := range parts {
		out = append(out, p...)
	}
	c.grown = out
	return out[:len(out):len(out)]
}
