/*
 * gssinit: the peer of segkcd's warm path. MIT krb5's GSS-API builds an
 * "Authorization: Negotiate" header from a ticket it already holds:
 * gss_init_sec_context with the SPNEGO mechanism (a new context, so a
 * fresh authenticator, each time), base64, "Negotiate " prefix, context
 * deleted. The credentials are copied once from the ccache named on the
 * command line into a MEMORY ccache, MIT's fastest, so no file is read in
 * the loop. Prints the mean nanoseconds per header.
 *
 * The target is a Kerberos principal name (http/mail.corp.example.com@REALM),
 * imported as such: no DNS canonicalization, as segkcd does none.
 *
 * usage: gssinit CCACHE PRINCIPAL N
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <krb5.h>
#include <gssapi/gssapi.h>
#include <gssapi/gssapi_krb5.h>

static gss_OID_desc spnego = {6, (void *)"\x2b\x06\x01\x05\x05\x02"};

static void fail(const char *what, OM_uint32 maj, OM_uint32 min)
{
	fprintf(stderr, "gssinit: %s: major %u minor %u\n", what, maj, min);
	exit(1);
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* header writes "Negotiate <base64 of in>" into out, as a client sends it. */
static size_t header(const unsigned char *in, size_t n, char *out)
{
	size_t o = 0, i;
	memcpy(out, "Negotiate ", 10);
	o = 10;
	for (i = 0; i + 2 < n; i += 3) {
		unsigned v = in[i] << 16 | in[i + 1] << 8 | in[i + 2];
		out[o++] = b64[v >> 18 & 63];
		out[o++] = b64[v >> 12 & 63];
		out[o++] = b64[v >> 6 & 63];
		out[o++] = b64[v & 63];
	}
	if (i < n) {
		unsigned v = in[i] << 16 | (i + 1 < n ? in[i + 1] << 8 : 0);
		out[o++] = b64[v >> 18 & 63];
		out[o++] = b64[v >> 12 & 63];
		out[o++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
		out[o++] = '=';
	}
	out[o] = 0;
	return o;
}

int main(int argc, char **argv)
{
	krb5_context kctx;
	krb5_ccache file, mem;
	krb5_principal client;
	OM_uint32 maj, min;
	gss_name_t target;
	gss_buffer_desc name;
	long n, i;
	struct timespec t0, t1;
	static char out[65536];

	if (argc != 4 || (n = atol(argv[3])) <= 0) {
		fprintf(stderr, "usage: gssinit CCACHE PRINCIPAL N\n");
		return 2;
	}
	if (krb5_init_context(&kctx) || krb5_cc_resolve(kctx, argv[1], &file) ||
	    krb5_cc_get_principal(kctx, file, &client) || krb5_cc_new_unique(kctx, "MEMORY", NULL, &mem) ||
	    krb5_cc_initialize(kctx, mem, client) || krb5_cc_copy_creds(kctx, file, mem)) {
		fprintf(stderr, "gssinit: cannot copy %s into a MEMORY ccache\n", argv[1]);
		return 1;
	}
	{
		char *memname;
		if (krb5_cc_get_full_name(kctx, mem, &memname))
			return 1;
		maj = gss_krb5_ccache_name(&min, memname, NULL);
		if (GSS_ERROR(maj))
			fail("gss_krb5_ccache_name", maj, min);
	}
	name.value = argv[2];
	name.length = strlen(argv[2]);
	maj = gss_import_name(&min, &name, GSS_KRB5_NT_PRINCIPAL_NAME, &target);
	if (GSS_ERROR(maj))
		fail("gss_import_name", maj, min);
	for (i = -100; i < n; i++) { /* 100 rounds of warm-up */
		gss_ctx_id_t ctx = GSS_C_NO_CONTEXT;
		gss_buffer_desc tok = GSS_C_EMPTY_BUFFER;
		if (i == 0)
			clock_gettime(CLOCK_MONOTONIC, &t0);
		maj = gss_init_sec_context(&min, GSS_C_NO_CREDENTIAL, &ctx, target, &spnego, 0, 0,
		    GSS_C_NO_CHANNEL_BINDINGS, GSS_C_NO_BUFFER, NULL, &tok, NULL, NULL);
		if (GSS_ERROR(maj))
			fail("gss_init_sec_context", maj, min);
		if (tok.length * 4 / 3 + 16 > sizeof out)
			fail("token too long", 0, 0);
		header(tok.value, tok.length, out);
		gss_release_buffer(&min, &tok);
		gss_delete_sec_context(&min, &ctx, GSS_C_NO_BUFFER);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%.0f\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n);
	return 0;
}
