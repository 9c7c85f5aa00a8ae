package h1

import (
	"bufio"
	"io"
	"sync"
)

// bufio buffers, taken while bytes move and given back after.
var (
	writers     sync.Pool // *bufio.Writer, 4 KiB
	readers     sync.Pool // *bufio.Reader, answerBuffer
	pollReaders sync.Pool // *bufio.Reader, pollBuffer
)

// Reader sizes. An answer's reader is held for as long as the answer is
// open. answerBuffer: an answer's headers and a chunk's size line fit, and
// a body read into the copy buffer, larger, goes past it. A long poll's
// (Send's) is smaller, since a streamed one is open for an hour: longer
// headers are read in parts.
const (
	answerBuffer = 2 << 10
	pollBuffer   = 512
)

func getWriter(w io.Writer) *bufio.Writer {
	if bw, ok := writers.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, 4<<10)
}

func putWriter(bw *bufio.Writer) { bw.Reset(nil); writers.Put(bw) }

// getReader lends a reader of size bytes (answerBuffer or pollBuffer).
func getReader(r io.Reader, size int) *bufio.Reader {
	if br, ok := readerPool(size).Get().(*bufio.Reader); ok {
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, size)
}

func readerPool(size int) *sync.Pool {
	if size < answerBuffer {
		return &pollReaders
	}
	return &readers
}

func putReader(br *bufio.Reader) {
	br.Reset(nil)
	readerPool(br.Size()).Put(br)
}
