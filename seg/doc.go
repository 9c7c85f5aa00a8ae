// Package seg will hold the gateway: an http.Handler in the shape of
// httputil.ReverseProxy that authenticates the device, applies an MDM policy
// hook, and forwards ActiveSync to Exchange with a KCD ticket.
//
// Not implemented yet: it is planned in a later issue. The package exists so
// the module's layout is visible from the start; it exports nothing.
package seg
