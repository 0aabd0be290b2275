/* The control protocol without sockets: line framing (split lines, CRLF,
 * lines over the limit), request parsing and its error messages, reply and
 * event formatting, text sanitizing, argument checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "control/protocol.h"

static void feed(struct control_linebuf *lb, const char *s)
{
	assert_int_equal(control_linebuf_feed(lb, s, strlen(s)), 0);
}

static void expect_line(struct control_linebuf *lb, const char *want)
{
	char *line;
	size_t len;
	assert_int_equal(control_linebuf_next(lb, &line, &len), CONTROL_LINE_OK);
	assert_int_equal(len, strlen(want));
	assert_string_equal(line, want);
}

static void expect_none(struct control_linebuf *lb)
{
	char *line;
	size_t len;
	assert_int_equal(control_linebuf_next(lb, &line, &len), CONTROL_LINE_NONE);
}

static void expect_too_long(struct control_linebuf *lb)
{
	char *line;
	size_t len;
	assert_int_equal(control_linebuf_next(lb, &line, &len), CONTROL_LINE_TOO_LONG);
}

static void test_lines(void **state)
{
	(void)state;
	struct control_linebuf lb;
	control_linebuf_init(&lb, 100);
	expect_none(&lb);
	feed(&lb, "one\ntwo\r\n\nthr");
	expect_line(&lb, "one");
	expect_line(&lb, "two");
	expect_line(&lb, "");
	expect_none(&lb);
	assert_int_equal(control_linebuf_pending(&lb), 3);
	feed(&lb, "ee");
	expect_none(&lb);
	feed(&lb, "\n");
	expect_line(&lb, "three");
	assert_int_equal(control_linebuf_pending(&lb), 0);
	/* byte by byte */
	const char *s = "{\"cmd\":\"status\"}\n";
	for (const char *p = s; *p; p++) {
		assert_int_equal(control_linebuf_feed(&lb, p, 1), 0);
		if (p[1])
			expect_none(&lb);
	}
	expect_line(&lb, "{\"cmd\":\"status\"}");
	/* a NUL byte inside a line is kept (the parser refuses it) */
	assert_int_equal(control_linebuf_feed(&lb, "a\0b\n", 4), 0);
	char *line;
	size_t len;
	assert_int_equal(control_linebuf_next(&lb, &line, &len), CONTROL_LINE_OK);
	assert_int_equal(len, 3);
	assert_memory_equal(line, "a\0b", 3);
	control_linebuf_free(&lb);
}

static void test_too_long(void **state)
{
	(void)state;
	struct control_linebuf lb;
	control_linebuf_init(&lb, 8);
	feed(&lb, "12345678\n");        /* exactly the limit: fine */
	expect_line(&lb, "12345678");
	feed(&lb, "123456789");         /* one over, no newline yet */
	expect_too_long(&lb);
	expect_none(&lb);               /* reported once */
	feed(&lb, "more and more bytes of the same line");
	expect_none(&lb);
	feed(&lb, "end\nok\n");
	expect_line(&lb, "ok");
	expect_none(&lb);
	/* a whole long line in one feed, followed by a good one */
	feed(&lb, "0123456789abcdef\nfine\n");
	expect_too_long(&lb);
	expect_line(&lb, "fine");
	/* memory stays bounded by limit + feed size */
	for (int i = 0; i < 1000; i++) {
		feed(&lb, "xxxxxxxxxxxxxxxx");
		char *line;
		size_t len;
		assert_int_equal(control_linebuf_next(&lb, &line, &len),
				 i == 0 ? CONTROL_LINE_TOO_LONG : CONTROL_LINE_NONE);
	}
	assert_true(lb.cap <= 4096);
	control_linebuf_free(&lb);
}

static void test_blank(void **state)
{
	(void)state;
	assert_true(control_line_is_blank("", 0));
	assert_true(control_line_is_blank(" \t ", 3));
	assert_false(control_line_is_blank(" x", 2));
}

/* Parse and expect success. */
static void parse_ok(const char *line, const char *cmd, struct control_request *r)
{
	const char *code = NULL;
	char msg[CONTROL_MAX_MESSAGE];
	int k = control_parse_request(line, strlen(line), r, &code, msg, sizeof(msg));
	if (k)
		fail_msg("%s: %s: %s", line, code, msg);
	assert_string_equal(r->cmd, cmd);
	assert_true(json_is_object(r->args));
}

/* Parse and expect an error whose message contains `part`. */
static void parse_bad(const char *line, size_t len, const char *code_want, const char *part,
		      json_t *id_want)
{
	struct control_request r;
	const char *code = NULL;
	char msg[CONTROL_MAX_MESSAGE];
	assert_int_equal(control_parse_request(line, len, &r, &code, msg, sizeof(msg)), -1);
	assert_string_equal(code, code_want);
	if (!strstr(msg, part))
		fail_msg("\"%s\": message \"%s\" lacks \"%s\"", line, msg, part);
	if (id_want)
		assert_true(json_equal(r.id, id_want));
	else
		assert_null(r.id);
	control_request_clear(&r);
}

/* a string literal, NUL bytes included */
#define BAD(lit, ...) parse_bad(lit, sizeof(lit) - 1, __VA_ARGS__)

static void test_parse(void **state)
{
	(void)state;
	struct control_request r;
	parse_ok("{\"id\": 7, \"cmd\": \"status\", \"args\": {\"a\": [1]}}", "status", &r);
	assert_int_equal(json_integer_value(r.id), 7);
	assert_int_equal(json_object_size(r.args), 1);
	control_request_clear(&r);

	parse_ok("{\"cmd\": \"pause\"}", "pause", &r);
	assert_null(r.id);
	assert_int_equal(json_object_size(r.args), 0);
	control_request_clear(&r);

	parse_ok("  {\"args\": null, \"cmd\": \"x\", \"id\": {\"any\": [\"json\"]}}  ", "x", &r);
	assert_true(json_is_object(r.id));
	control_request_clear(&r);

	parse_ok("{\"cmd\": \"caf\xc3\xa9\"}", "caf\xc3\xa9", &r);   /* any string; the registry decides */
	control_request_clear(&r);

	json_t *five = json_integer(5);
	BAD("", CONTROL_E_BAD_REQUEST, "malformed JSON", NULL);
	BAD("{\"cmd\":", CONTROL_E_BAD_REQUEST, "malformed JSON at byte", NULL);
	BAD("{\"cmd\":\"a\"} {}", CONTROL_E_BAD_REQUEST, "malformed JSON", NULL);
	BAD("[1, 2]", CONTROL_E_BAD_REQUEST, "not an array", NULL);
	BAD("\"status\"", CONTROL_E_BAD_REQUEST, "not a string", NULL);
	BAD("42", CONTROL_E_BAD_REQUEST, "not an integer", NULL);
	BAD("null", CONTROL_E_BAD_REQUEST, "not null", NULL);
	BAD("{\"id\": 5}", CONTROL_E_BAD_REQUEST, "no \"cmd\"", five);
	BAD("{\"id\": 5, \"cmd\": 1}", CONTROL_E_BAD_REQUEST, "\"cmd\" must be a string, not an integer", five);
	BAD("{\"id\": 5, \"cmd\": \"s\", \"args\": [1]}", CONTROL_E_BAD_REQUEST,
		  "\"args\" must be an object, not an array", five);
	BAD("{\"id\": 5, \"cmd\": \"s\", \"arg\": {}}", CONTROL_E_BAD_REQUEST,
		  "unknown key \"arg\"", five);
	BAD("{\"cmd\": \"a\", \"cmd\": \"b\"}", CONTROL_E_BAD_REQUEST, "duplicate", NULL);
	BAD("{\"cmd\": \"a\0b\"}", CONTROL_E_BAD_REQUEST, "malformed JSON", NULL);
	BAD("{\"cmd\": \"\xff\"}", CONTROL_E_BAD_REQUEST, "malformed JSON", NULL);
	json_decref(five);

	/* nesting far beyond the parser's depth limit: an error, not a crash */
	size_t n = 100000;
	char *deep = malloc(2 * n + 1);
	memset(deep, '[', n);
	memset(deep + n, ']', n);
	deep[2 * n] = '\0';
	parse_bad(deep, 2 * n, CONTROL_E_BAD_REQUEST, "malformed JSON", NULL);
	free(deep);
}

/* len is read after got was made (argument evaluation order is unspecified) */
static void expect_text(char *got, const size_t *len, const char *want)
{
	assert_non_null(got);
	assert_string_equal(got, want);
	assert_int_equal(*len, strlen(want));
	free(got);
}

static void test_format(void **state)
{
	(void)state;
	size_t len;
	json_t *id = json_string("a");
	json_t *res = json_pack("{s:s, s:i}", "state", "paused", "n", 3);
	expect_text(control_format_ok(id, res, &len), &len, "{\"id\":\"a\",\"ok\":{\"state\":\"paused\",\"n\":3}}\n");
	expect_text(control_format_ok(NULL, NULL, &len), &len, "{\"id\":null,\"ok\":{}}\n");
	expect_text(control_format_error(id, CONTROL_E_BAD_ARGS, "no \"path\"", &len), &len,
		    "{\"id\":\"a\",\"error\":{\"code\":\"bad-args\",\"message\":\"no \\\"path\\\"\"}}\n");
	/* bad bytes and control characters cannot break the line */
	expect_text(control_format_error(NULL, "failed", "file \xff\xfe\nx", &len), &len,
		    "{\"id\":null,\"error\":{\"code\":\"failed\",\"message\":\"file ?? x\"}}\n");
	json_t *data = json_pack("{s:s, s:I, s:I}", "op", "snapshot-save", "done", (json_int_t)1,
				 "total", (json_int_t)4);
	expect_text(control_format_event("progress", data, &len), &len,
		    "{\"event\":\"progress\",\"data\":{\"op\":\"snapshot-save\",\"done\":1,\"total\":4}}\n");
	expect_text(control_format_event("state", NULL, &len), &len, "{\"event\":\"state\",\"data\":{}}\n");
	/* the inputs are not consumed */
	assert_int_equal(id->refcount, 1);
	assert_int_equal(res->refcount, 1);
	json_decref(id);
	json_decref(res);
	json_decref(data);
}

static void test_sanitize(void **state)
{
	(void)state;
	char b[16];
	control_sanitize(b, sizeof(b), "plain");
	assert_string_equal(b, "plain");
	control_sanitize(b, sizeof(b), "caf\xc3\xa9 \xe2\x82\xac");
	assert_string_equal(b, "caf\xc3\xa9 \xe2\x82\xac");
	control_sanitize(b, sizeof(b), "a\xc3(b\xed\xa0\x80" "c");   /* bad continuation, surrogate */
	assert_string_equal(b, "a?(b???c");
	control_sanitize(b, sizeof(b), "\xc0\xaf\xf5\x80");          /* overlong, beyond U+10FFFF */
	assert_string_equal(b, "????");
	control_sanitize(b, sizeof(b), "tab\there\x7f");
	assert_string_equal(b, "tab here ");
	/* truncation never splits a character */
	control_sanitize(b, 5, "abc\xe2\x82\xac");
	assert_string_equal(b, "abc");
	control_sanitize(b, 1, "abc");
	assert_string_equal(b, "");
}

static void test_args(void **state)
{
	(void)state;
	char msg[CONTROL_MAX_MESSAGE];
	json_t *out;
	json_t *args = json_pack("{s:s, s:b, s:i, s:n, s:f}", "path", "/x", "exit", 1, "n", 3, "z", "r", 1.5);

	static const char *const known[] = { "path", "exit", "n", "z", "r", NULL };
	static const char *const fewer[] = { "path", "exit", NULL };
	static const char *const none[] = { NULL };
	assert_int_equal(control_args_known(args, known, msg, sizeof(msg)), 0);
	assert_int_equal(control_args_known(args, fewer, msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "unknown argument"));
	assert_non_null(strstr(msg, "known: \"path\", \"exit\""));
	assert_int_equal(control_args_known(args, none, msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "takes none"));

	assert_int_equal(control_arg(args, "path", JSON_STRING, true, &out, msg, sizeof(msg)), 0);
	assert_string_equal(json_string_value(out), "/x");
	assert_int_equal(control_arg(args, "exit", JSON_TRUE, true, &out, msg, sizeof(msg)), 0);
	assert_true(json_is_true(out));
	assert_int_equal(control_arg(args, "n", JSON_INTEGER, true, &out, msg, sizeof(msg)), 0);
	assert_int_equal(control_arg(args, "n", JSON_REAL, true, &out, msg, sizeof(msg)), 0);
	assert_int_equal(control_arg(args, "r", JSON_REAL, true, &out, msg, sizeof(msg)), 0);
	assert_int_equal(control_arg(args, "r", JSON_INTEGER, true, &out, msg, sizeof(msg)), -1);
	assert_string_equal(msg, "argument \"r\" must be an integer, not a number");
	assert_int_equal(control_arg(args, "path", JSON_TRUE, true, &out, msg, sizeof(msg)), -1);
	assert_string_equal(msg, "argument \"path\" must be a boolean, not a string");
	assert_null(out);
	/* absent, or null: fine when optional, an error when required */
	assert_int_equal(control_arg(args, "gone", JSON_STRING, false, &out, msg, sizeof(msg)), 0);
	assert_null(out);
	assert_int_equal(control_arg(args, "z", JSON_STRING, false, &out, msg, sizeof(msg)), 0);
	assert_null(out);
	assert_int_equal(control_arg(args, "gone", JSON_STRING, true, &out, msg, sizeof(msg)), -1);
	assert_string_equal(msg, "missing argument \"gone\" (a string)");
	json_decref(args);
}

static void test_cmd_names(void **state)
{
	(void)state;
	assert_true(control_cmd_name_valid("status"));
	assert_true(control_cmd_name_valid("snapshot-save"));
	assert_true(control_cmd_name_valid("migrate2"));
	assert_false(control_cmd_name_valid(""));
	assert_false(control_cmd_name_valid("-x"));
	assert_false(control_cmd_name_valid("2x"));
	assert_false(control_cmd_name_valid("Status"));
	assert_false(control_cmd_name_valid("a b"));
	assert_false(control_cmd_name_valid("a_b"));
	char longname[CONTROL_MAX_CMD + 2];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_false(control_cmd_name_valid(longname));
	longname[CONTROL_MAX_CMD] = '\0';
	assert_true(control_cmd_name_valid(longname));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lines),
		cmocka_unit_test(test_too_long),
		cmocka_unit_test(test_blank),
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_sanitize),
		cmocka_unit_test(test_args),
		cmocka_unit_test(test_cmd_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
