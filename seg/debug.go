package seg

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// DebugDevices is the set of devices whose requests are logged step by step
// (SEG's per-device logging), switched on and off at run time through the
// admin API. Device ids compare with ASCII letters folded (foldDeviceID). The zero value is an empty
// set; methods are safe for concurrent use.
type DebugDevices struct {
	mu  sync.RWMutex
	ids map[string]time.Time // foldDeviceID(id) -> when debugging was switched on
}

// Enable switches debugging on for a device.
func (d *DebugDevices) Enable(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ids == nil {
		d.ids = map[string]time.Time{}
	}
	d.ids[foldDeviceID(id)] = time.Now()
}

// Disable switches it off.
func (d *DebugDevices) Disable(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.ids, foldDeviceID(id))
}

// Has reports whether a device is being debugged.
func (d *DebugDevices) Has(id string) bool {
	if d == nil || id == "" {
		return false
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	_, ok := d.ids[foldDeviceID(id)]
	return ok
}

// List returns the devices being debugged, sorted.
func (d *DebugDevices) List() []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]string, 0, len(d.ids))
	for id := range d.ids {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// debugf logs one step of a debugged device's request. Values are the
// gateway's own (user, stage, timings, statuses), never a credential.
func (h *ProxyHandler) debugf(line *logLine, step string, attrs ...slog.Attr) {
	if !line.debug {
		return
	}
	attrs = append([]slog.Attr{slog.String("device", line.params.DeviceID), slog.String("user", line.user),
		slog.String("step", step)}, attrs...)
	h.logger().LogAttrs(context.Background(), slog.LevelInfo, "device debug", attrs...)
}
