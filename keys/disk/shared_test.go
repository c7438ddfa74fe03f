package disk

import (
	"os"
	"strings"
	"testing"

	"github.com/meshroot/meshroot/keys"
)

// A key file its group may read (a Secret mounted with the pod's fsGroup)
// loads only with GroupReadable; one others may read never loads.
func TestGroupReadableKeyFile(t *testing.T) {
	dir := t.TempDir()
	pass := []byte("correct horse battery")
	m, err := New(Options{Dir: dir, Passphrase: pass})
	if err != nil {
		t.Fatal(err)
	}
	k, err := m.CreateKey(t.Context(), "root", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	path, _, _ := KeyFile(k.Ref, dir)
	group, err := New(Options{Dir: dir, Passphrase: pass, GroupReadable: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode                  os.FileMode
		ownerOnly, groupReads bool
	}{
		{0o600, true, true},
		{0o400, true, true},
		{0o440, false, true},
		{0o640, false, true},
		{0o460, false, false}, // group write
		{0o604, false, false},
		{0o444, false, false},
	} {
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			m    *KeyManager
			want bool
		}{{m, tc.ownerOnly}, {group, tc.groupReads}} {
			_, err := c.m.Signer(t.Context(), k.Ref)
			if (err == nil) != c.want || (err != nil && !strings.Contains(err.Error(), "readable by others")) {
				t.Errorf("mode %04o, group readable %v: %v, want loaded %v", tc.mode, c.m.groupRead, err, c.want)
			}
		}
		enc, err := Encrypted(path, true)
		if tc.groupReads && (err != nil || !enc) {
			t.Errorf("Encrypted(mode %04o) = %v, %v", tc.mode, enc, err)
		}
	}
}
