package kerberos

// revDER writes DER back to front into one buffer: an element's content is
// written first, then wrap puts the tag and length in front of it, so no
// length needs computing ahead and nothing is copied per nesting level.
// The gateway encodes an authenticator per request; written with tlv it
// cost one allocation per element.
type revDER struct {
	b []byte
	i int // b[i:] is what has been written
}

func newRevDER(size int) *revDER { return &revDER{b: make([]byte, size), i: size} }

// len is how much has been written; a mark for wrap.
func (r *revDER) len() int { return len(r.b) - r.i }

func (r *revDER) grow(n int) {
	if r.i >= n {
		return
	}
	nb := make([]byte, 2*len(r.b)+n)
	off := len(nb) - r.len()
	copy(nb[off:], r.b[r.i:])
	r.b, r.i = nb, off
}

func (r *revDER) bytes(p []byte) {
	r.grow(len(p))
	r.i -= len(p)
	copy(r.b[r.i:], p)
}

func (r *revDER) string(s string) {
	r.grow(len(s))
	r.i -= len(s)
	copy(r.b[r.i:], s)
}

// wrap makes everything written since mark the content of one element.
func (r *revDER) wrap(tag byte, mark int) {
	n := r.len() - mark
	var h [6]byte
	hl := len(appendDERHeader(h[:0], tag, n))
	r.grow(hl)
	r.i -= hl
	copy(r.b[r.i:], h[:hl])
}

// int writes an INTEGER (the fewest two's-complement bytes).
func (r *revDER) int(v int64) {
	m := r.len()
	for {
		r.grow(1)
		r.i--
		r.b[r.i] = byte(v)
		if -0x80 <= v && v < 0x80 {
			break
		}
		v >>= 8
	}
	r.wrap(0x02, m)
}

// out returns the encoding.
func (r *revDER) out() []byte { return r.b[r.i:] }
