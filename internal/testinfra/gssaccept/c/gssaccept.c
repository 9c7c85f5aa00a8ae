/*
 * gssaccept: an independent acceptor for segkcd's Negotiate tokens. MIT
 * krb5's gss_accept_sec_context takes the initial context token (SPNEGO or
 * bare Kerberos) read from stdin, with the keys of the keytab that
 * KRB5_KTNAME names, and, when one is given, input channel bindings whose
 * application data is the hex on the command line (for TLS,
 * "tls-server-end-point:" and the certificate's hash; no addresses, as
 * Windows and RFC 5929 have them).
 *
 * It prints "accepted <client>" and exits 0, or "refused <status>" and
 * exits 1, where status names the GSS major status (GSS_S_BAD_BINDINGS when
 * the token is bound to another channel). Usage errors exit 2.
 *
 * usage: gssaccept [HEX-APPLICATION-DATA] < token
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <gssapi/gssapi.h>
#include <gssapi/gssapi_krb5.h>

static int unhex(const char *s, unsigned char **out, size_t *n)
{
	size_t len = strlen(s), i;
	if (len % 2 != 0)
		return -1;
	*out = malloc(len / 2 + 1);
	if (*out == NULL)
		return -1;
	for (i = 0; i < len / 2; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		(*out)[i] = (unsigned char)v;
	}
	*n = len / 2;
	return 0;
}

static const char *major_name(OM_uint32 maj)
{
	switch (GSS_ROUTINE_ERROR(maj)) {
	case GSS_S_BAD_BINDINGS: return "GSS_S_BAD_BINDINGS";
	case GSS_S_BAD_SIG: return "GSS_S_BAD_SIG";
	case GSS_S_DEFECTIVE_TOKEN: return "GSS_S_DEFECTIVE_TOKEN";
	case GSS_S_DEFECTIVE_CREDENTIAL: return "GSS_S_DEFECTIVE_CREDENTIAL";
	case GSS_S_CREDENTIALS_EXPIRED: return "GSS_S_CREDENTIALS_EXPIRED";
	case GSS_S_NO_CRED: return "GSS_S_NO_CRED";
	case GSS_S_BAD_MECH: return "GSS_S_BAD_MECH";
	case GSS_S_FAILURE: return "GSS_S_FAILURE";
	}
	return "GSS_S_other";
}

int main(int argc, char **argv)
{
	static unsigned char buf[1 << 16];
	size_t n = fread(buf, 1, sizeof buf, stdin);
	struct gss_channel_bindings_struct cb;
	gss_channel_bindings_t bindings = GSS_C_NO_CHANNEL_BINDINGS;
	gss_buffer_desc in = {n, buf}, out = GSS_C_EMPTY_BUFFER, name = GSS_C_EMPTY_BUFFER;
	gss_ctx_id_t ctx = GSS_C_NO_CONTEXT;
	gss_name_t client = GSS_C_NO_NAME;
	OM_uint32 maj, min;

	if (argc > 2 || n == 0 || n == sizeof buf) {
		fprintf(stderr, "usage: gssaccept [HEX-APPLICATION-DATA] < token\n");
		return 2;
	}
	if (argc == 2) {
		unsigned char *data;
		size_t len;
		if (unhex(argv[1], &data, &len) != 0) {
			fprintf(stderr, "gssaccept: bad hex\n");
			return 2;
		}
		memset(&cb, 0, sizeof cb);
		cb.initiator_addrtype = GSS_C_AF_UNSPEC;
		cb.acceptor_addrtype = GSS_C_AF_UNSPEC;
		cb.application_data.length = len;
		cb.application_data.value = data;
		bindings = &cb;
	}
	maj = gss_accept_sec_context(&min, &ctx, GSS_C_NO_CREDENTIAL, &in, bindings, &client, NULL, &out, NULL, NULL, NULL);
	if (GSS_ERROR(maj)) {
		gss_buffer_desc msg = GSS_C_EMPTY_BUFFER;
		OM_uint32 m2, more = 0;
		gss_display_status(&m2, min, GSS_C_MECH_CODE, GSS_C_NO_OID, &more, &msg);
		printf("refused %s (%.*s)\n", major_name(maj), (int)msg.length, (char *)msg.value);
		return 1;
	}
	if (maj & GSS_S_CONTINUE_NEEDED) {
		printf("refused GSS_S_CONTINUE_NEEDED\n");
		return 1;
	}
	maj = gss_display_name(&min, client, &name, NULL);
	if (GSS_ERROR(maj)) {
		printf("refused gss_display_name\n");
		return 1;
	}
	printf("accepted %.*s\n", (int)name.length, (char *)name.value);
	gss_release_buffer(&min, &name);
	gss_release_buffer(&min, &out);
	gss_release_name(&min, &client);
	gss_delete_sec_context(&min, &ctx, GSS_C_NO_BUFFER);
	return 0;
}
