package flags

import "math/bits"

// MurmurHash3 x86 32-bit, as flagd's fractional operation uses it (seed 0,
// over the UTF-8 bytes). It is written here over strings, and over the
// concatenation of two strings, so that bucketing never allocates.

const (
	murC1 = 0xcc9e2d51
	murC2 = 0x1b873593
)

func murMix(h, k uint32) uint32 {
	k *= murC1
	k = bits.RotateLeft32(k, 15)
	k *= murC2
	h ^= k
	h = bits.RotateLeft32(h, 13)
	return h*5 + 0xe6546b64
}

func murFinal(h uint32, n int, tail uint32, tailLen int) uint32 {
	if tailLen > 0 {
		tail *= murC1
		tail = bits.RotateLeft32(tail, 15)
		tail *= murC2
		h ^= tail
	}
	h ^= uint32(n)
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// murmur3 hashes s with seed 0.
func murmur3(s string) uint32 { return murmur3Seed(s, 0) }

// murmur3Seed hashes s with the given seed.
func murmur3Seed(s string, seed uint32) uint32 {
	h := seed
	i := 0
	for ; i+4 <= len(s); i += 4 {
		h = murMix(h, uint32(s[i])|uint32(s[i+1])<<8|uint32(s[i+2])<<16|uint32(s[i+3])<<24)
	}
	var tail uint32
	for j := len(s) - 1; j >= i; j-- {
		tail = tail<<8 | uint32(s[j])
	}
	return murFinal(h, len(s), tail, len(s)-i)
}

// murmur3Concat hashes a+b with seed 0 without building the concatenation.
func murmur3Concat(a, b string) uint32 {
	var m murStream
	m.write(a)
	m.write(b)
	return m.sum()
}

// murStream hashes a string given in pieces, with seed 0.
type murStream struct {
	h     uint32
	block uint32 // bytes carried over to the next block, little-endian
	fill  int    // bytes in block
	n     int    // total length
}

func (m *murStream) write(s string) {
	m.n += len(s)
	i := 0
	if m.fill > 0 {
		for ; i < len(s) && m.fill < 4; i++ {
			m.block |= uint32(s[i]) << (8 * m.fill)
			m.fill++
		}
		if m.fill < 4 {
			return
		}
		m.h = murMix(m.h, m.block)
		m.block, m.fill = 0, 0
	}
	h := m.h
	for ; i+4 <= len(s); i += 4 {
		h = murMix(h, uint32(s[i])|uint32(s[i+1])<<8|uint32(s[i+2])<<16|uint32(s[i+3])<<24)
	}
	m.h = h
	for ; i < len(s); i++ {
		m.block |= uint32(s[i]) << (8 * m.fill)
		m.fill++
	}
}

func (m *murStream) sum() uint32 { return murFinal(m.h, m.n, m.block, m.fill) }

// Murmur3 returns MurmurHash3 x86_32 with seed 0 of the concatenation of
// parts: the hash flagd's fractional operation buckets with (other
// packages bucket the same way with it, e.g. experiment assignment). It
// never allocates and never fails.
func Murmur3(parts ...string) uint32 {
	var m murStream
	for _, p := range parts {
		m.write(p)
	}
	return m.sum()
}
