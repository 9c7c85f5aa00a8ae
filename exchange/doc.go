// Package exchange will hold the Exchange Alternate Service Account
// credential: roll, copy and status on Exchange servers over WinRM, in the
// order of RollAlternateServiceAccountPassword.ps1.
//
// Not implemented yet: it is planned in issue 4. The package exists so
// the module's layout is visible from the start; it exports nothing.
package exchange
