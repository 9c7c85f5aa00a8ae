package winrstest

import (
	"encoding/base64"
	"strings"
	"time"
)

// winrsCommand is a command as WinRS runs it: created by Command, fed by Send (stdin),
// read by Receive, stopped by Signal terminate or by deleting its shell.
// The script starts when its standard input is closed (Send with End) or
// at the first Receive, and runs on its own goroutine, so a long command
// answers Receive with the TimedOut fault while it runs, as Windows does.
type winrsCommand struct {
	shell   string
	line    string
	stdin   strings.Builder
	started bool
	stop    chan struct{} // closed by Signal terminate or shell deletion
	stopped bool
	done    chan struct{} // closed when the script has finished
	res     *result
}

// receiveWait is how long a Receive waits for a running command before
// answering TimedOut (Windows waits the request's OperationTimeout; the
// model answers sooner to keep tests quick).
const receiveWait = 500 * time.Millisecond

// CommandLines returns the command line of every process the host
// started, as process-creation auditing (event 4688, Sysmon 1) records
// them: what a secret must never be part of.
func (s *Server) CommandLines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.audit...)
}

// Shells returns how many shells are open (created and not deleted).
func (s *Server) Shells() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.shells)
}

// Running returns how many commands are still running (started, neither
// finished nor stopped).
func (s *Server) Running() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.cmds {
		if c.started && !c.stopped {
			select {
			case <-c.done:
			default:
				n++
			}
		}
	}
	return n
}

// startLocked runs the command's script on its own goroutine.
func (s *Server) startLocked(c *winrsCommand) {
	if c.started {
		return
	}
	c.started = true
	var lines []string
	if in := strings.TrimRight(c.stdin.String(), "\r\n"); in != "" {
		lines = strings.Split(strings.ReplaceAll(in, "\r\n", "\n"), "\n")
	}
	go func() {
		c.res = s.run(c.line, lines, c.stop)
		close(c.done)
	}()
}

func (s *Server) stopLocked(c *winrsCommand) {
	if !c.stopped {
		c.stopped = true
		close(c.stop)
	}
}

// send appends to a command's standard input.
func (s *Server) send(e envelope) (string, bool) {
	data, err := base64.StdEncoding.DecodeString(strings.TrimSpace(e.stdin))
	if err != nil {
		return "bad base64 in Send", false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.cmds[e.commandID]
	if !ok || c.shell != e.shellID {
		return "unknown command id", false
	}
	if c.started {
		return "the command's input is closed", false
	}
	c.stdin.Write(data)
	if e.stdinEnd {
		s.startLocked(c)
	}
	return "", true
}

// receive waits a while for the command and returns its result, or nil
// when it still runs.
func (s *Server) receive(id string) (*result, bool) {
	s.mu.Lock()
	c, ok := s.cmds[id]
	if ok {
		s.startLocked(c)
	}
	s.mu.Unlock()
	if !ok {
		return nil, false
	}
	select {
	case <-c.done:
	case <-time.After(receiveWait):
		return nil, true
	}
	s.mu.Lock()
	delete(s.cmds, id)
	s.mu.Unlock()
	return c.res, true
}

// deleteShell removes a shell and stops its commands.
func (s *Server) deleteShell(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.shells, id)
	for cid, c := range s.cmds {
		if c.shell == id {
			s.stopLocked(c)
			delete(s.cmds, cid)
		}
	}
}
