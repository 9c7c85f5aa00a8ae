// Package kerberos will hold S4U2Self and S4U2Proxy on gokrb5 v8 (which has
// no S4U), a per-user ticket cache shaped like x/oauth2's ReuseTokenSource,
// SPNEGO Negotiate headers, and keytabs from passwords with AD's salt rules.
//
// Not implemented yet: it is planned in issue 3. The package exists so
// the module's layout is visible from the start; it exports nothing.
package kerberos
