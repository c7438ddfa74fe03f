package ca

import (
	"crypto/rand"
	"fmt"
	"math/big"
)

// newSerial returns a random, positive, non-zero 128-bit serial number.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generate serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// SerialHex formats a serial number as lower-case hex without separators,
// the form meshroot stores and prints.
func SerialHex(n *big.Int) string { return fmt.Sprintf("%x", n) }
