package kubeclient

import "maps"

// DeepCopy returns a copy of s that shares nothing with it.
func (s *Secret) DeepCopy() *Secret {
	if s == nil {
		return nil
	}
	out := *s
	out.ObjectMeta = *s.ObjectMeta.DeepCopy()
	out.Immutable = copyBool(s.Immutable)
	if s.Data != nil {
		out.Data = make(map[string][]byte, len(s.Data))
		for k, v := range s.Data {
			out.Data[k] = append([]byte(nil), v...)
		}
	}
	out.StringData = maps.Clone(s.StringData)
	return &out
}

// CopySharingData returns a copy of s whose Data map holds s's byte
// slices, not copies of them; everything else is copied as DeepCopy
// copies it.
func (s *Secret) CopySharingData() *Secret {
	if s == nil {
		return nil
	}
	out := *s
	out.Data, out.StringData = nil, nil
	c := out.DeepCopy()
	c.Data = maps.Clone(s.Data)
	c.StringData = maps.Clone(s.StringData)
	return c
}

// DeepCopy returns a copy of cm that shares nothing with it.
func (cm *ConfigMap) DeepCopy() *ConfigMap {
	if cm == nil {
		return nil
	}
	out := *cm
	out.ObjectMeta = *cm.ObjectMeta.DeepCopy()
	out.Immutable = copyBool(cm.Immutable)
	out.Data = maps.Clone(cm.Data)
	if cm.BinaryData != nil {
		out.BinaryData = make(map[string][]byte, len(cm.BinaryData))
		for k, v := range cm.BinaryData {
			out.BinaryData[k] = append([]byte(nil), v...)
		}
	}
	return &out
}

func copyBool(b *bool) *bool {
	if b == nil {
		return nil
	}
	v := *b
	return &v
}
