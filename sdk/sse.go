package sdk

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// sseEvent is one dispatched Server-Sent Event.
type sseEvent struct {
	id    string
	event string // "message" when the stream named none
	data  []byte
}

// sseReader parses a text/event-stream body (the WHATWG format: lines
// ending in LF or CRLF; "field: value"; comments start with ':'; a blank
// line dispatches). Every line read calls activity, which lets the caller
// reset its idle timer on heartbeats (comments).
type sseReader struct {
	r        *bufio.Reader
	max      int64
	activity func()
	line     []byte
	data     []byte // the last event's data, reused: events are handled one at a time
}

func newSSEReader(r io.Reader, maxEvent int64, activity func()) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 32<<10), max: maxEvent, activity: activity}
}

// errEventTooLarge is returned for an event beyond the size limit.
var errEventTooLarge = errors.New("stream message exceeds the size limit")

// next returns the next event that carries data. Its error is the body's
// read error (io.EOF when the server ended the stream) or errEventTooLarge.
// The event's data is valid until the next call.
func (s *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	data := s.data[:0]
	defer func() { s.data = data[:0] }()
	hasData := false
	for {
		line, err := s.readLine()
		if err != nil {
			return sseEvent{}, err
		}
		if s.activity != nil {
			s.activity()
		}
		if len(line) == 0 {
			if !hasData {
				ev.event = ""
				continue
			}
			if ev.event == "" {
				ev.event = "message"
			}
			ev.data = data
			return ev, nil
		}
		if line[0] == ':' {
			continue
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(name) {
		case "event":
			ev.event = string(value)
		case "data":
			if int64(len(data)+len(value)+1) > s.max {
				return sseEvent{}, errEventTooLarge
			}
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		case "id":
			if !bytes.ContainsRune(value, 0) {
				ev.id = string(value)
			}
		}
	}
}

// readLine returns the next line without its ending; the slice is reused.
func (s *sseReader) readLine() ([]byte, error) {
	s.line = s.line[:0]
	for {
		chunk, err := s.r.ReadSlice('\n')
		if int64(len(s.line)+len(chunk)) > s.max+2 {
			return nil, errEventTooLarge
		}
		s.line = append(s.line, chunk...)
		switch {
		case err == nil:
			l := bytes.TrimSuffix(s.line[:len(s.line)-1], []byte("\r"))
			return l, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(s.line) > 0:
			return nil, fmt.Errorf("stream ended inside a line: %w", io.ErrUnexpectedEOF)
		default:
			return nil, err
		}
	}
}
