// Package iis will hold Windows authentication (Negotiate, kernel mode, app-
// pool credentials) on the ActiveSync and EWS virtual directories, and the
// local IIS_IUSRS group, over WinRM.
//
// Not implemented yet: it is planned in issue 4. The package exists so
// the module's layout is visible from the start; it exports nothing.
package iis
