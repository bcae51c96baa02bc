/* Optional C fast path of presence_sip.sip.parser (pure Python stays the reference).
 *
 * parse(data, datagram) recognises the common, canonical shape of a SIP message and returns
 *     (method, uri, items, keys, body, raw, length)     for a request
 *     (status, reason, items, keys, body, raw, length)  for a response
 * exactly as parser.py would build them, or None whenever it is not sure: then the pure Python
 * path runs and decides (and names any defect).  So this file only ever accepts a SUBSET of what
 * parser.py accepts, with the identical result; tests/unit/test_speedups.py checks both claims.
 *
 * Accepted here (anything else -> None):
 *   - leading CRLFs, a header section closed by CRLF CRLF (parse_message checked the size);
 *   - header section bytes: printable ASCII (0x20-0x7E) and CRLF line ends, no folding;
 *   - "METHOD SP Request-URI SP SIP/2.0" (METHOD a token) or "SIP/2.0 SP 3DIGIT SP Reason";
 *   - header lines "Name: value" in canonical form: Via, From, To, Call-ID and CSeq values are
 *     recognised below; every other line must be in the line cache or proven by parser._scan_line
 *     (called back, so the Python regexes decide those), which also takes lines in another form
 *     (compact or differently cased name, extra blanks such as SIPp's "Content-Length:   206"):
 *     then, as in parser._parse, the raw header block is not kept (raw None, length -1);
 *   - the message-level rules of parser._proven and parser._body: mandatory headers present,
 *     single-valued ones once, CSeq method = request method, Request-URI in the R-URI cache or
 *     proven by parser._fast_ruri, a valid Content-Length not beyond the data.
 * Each recogniser accepts a subset of the matching regex of grammar.py (FAST_VIA_LIST,
 * FAST_NAME_ADDR, CALL_ID, FAST_CSEQ), quoted above it.
 *
 * split_via(item, via_class) is the first path of uri.parse_via in the same spirit: a subset of
 * grammar.SPLIT_VIA, the Via exactly as parse_via builds it, else None (see above the function).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef const unsigned char uc;

/* ---- character classes (RFC 3261 §25.1) -------------------------------------------------- */
enum {
    C_TOK = 1,     /* token: alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" */
    C_WORD = 2,    /* word (Call-ID): token chars / "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE /
                      "/" / "[" / "]" / "?" / "{" / "}" */
    C_USER = 4,    /* unreserved / "&" / "=" / "+" / "$" / "," / ";" / "?" / "/" */
    C_PASS = 8,    /* unreserved / "&" / "=" / "+" / "$" / "," */
    C_PARAM = 16,  /* unreserved / "[" / "]" / "/" / ":" / "&" / "+" / "$" */
    C_ALNUM = 32,
    C_HEX = 64,
    C_DIGIT = 128,
    C_QDTEXT = 256 /* inside the fast quoted-string: printable except DQUOTE "\" "<" ">" */
};
static unsigned short cls[256];

static void
mark(const char *chars, unsigned short c)
{
    for (; *chars; chars++)
        cls[(unsigned char)*chars] |= c;
}

static void
init_classes(void)
{
    static const char alnum[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    static const char unreserved[] = "-_.!~*'()";
    mark(alnum, C_TOK | C_WORD | C_USER | C_PASS | C_PARAM | C_ALNUM);
    mark("-.!%*_+`'~", C_TOK | C_WORD);
    mark("()<>:\\\"/[]?{}", C_WORD);
    mark(unreserved, C_USER | C_PASS | C_PARAM);
    mark("&=+$,;?/", C_USER);
    mark("&=+$,", C_PASS);
    mark("[]/:&+$", C_PARAM);
    mark("0123456789abcdefABCDEF", C_HEX);
    mark("0123456789", C_DIGIT);
    for (int ch = 0x20; ch < 0x7f; ch++)
        if (ch != '"' && ch != '\\' && ch != '<' && ch != '>')
            cls[ch] |= C_QDTEXT;
}

/* End of the run of class-c characters starting at i. */
static Py_ssize_t
run(uc *s, Py_ssize_t i, Py_ssize_t n, unsigned short c)
{
    while (i < n && (cls[s[i]] & c))
        i++;
    return i;
}

/* The same with escaped = "%" HEXDIG HEXDIG allowed (regex: (?:[class]++|%HH)*+). */
static Py_ssize_t
run_esc(uc *s, Py_ssize_t i, Py_ssize_t n, unsigned short c)
{
    for (;;) {
        if (i < n && (cls[s[i]] & c))
            i++;
        else if (i + 2 < n && s[i] == '%' && (cls[s[i + 1]] & C_HEX) && (cls[s[i + 2]] & C_HEX))
            i += 3;
        else
            return i;
    }
}

static int
starts(uc *s, Py_ssize_t i, Py_ssize_t n, const char *text)
{
    size_t len = strlen(text);
    return n - i >= (Py_ssize_t)len && memcmp(s + i, text, len) == 0;
}

/* _FAST_HOSTPORT without the IPv6 form:
 *   [A-Za-z0-9]++(?:[.\-][A-Za-z0-9]++)*+ (?: ":" port(0-65535, 5 digits without leading 0) )?
 * Returns the end, or -1. */
static Py_ssize_t
hostport(uc *s, Py_ssize_t i, Py_ssize_t n)
{
    Py_ssize_t j = run(s, i, n, C_ALNUM);
    if (j == i)
        return -1;
    while (j + 1 < n && (s[j] == '.' || s[j] == '-') && (cls[s[j + 1]] & C_ALNUM))
        j = run(s, j + 1, n, C_ALNUM);
    if (j < n && s[j] == ':') {
        Py_ssize_t k = run(s, j + 1, n, C_DIGIT), digits = k - (j + 1);
        if (digits < 1 || digits > 5)
            return -1;
        if (digits == 5) {
            long port = 0;
            for (Py_ssize_t d = j + 1; d < k; d++)
                port = port * 10 + (s[d] - '0');
            if (s[j + 1] == '0' || port > 65535)
                return -1;
        }
        j = k;
    }
    return j;
}

/* _FAST_QUOTED = DQUOTE *qdtext DQUOTE, starting at s[i] == '"'.  Returns the end, or -1. */
static Py_ssize_t
quoted(uc *s, Py_ssize_t i, Py_ssize_t n)
{
    Py_ssize_t j = run(s, i + 1, n, C_QDTEXT);
    return (j < n && s[j] == '"') ? j + 1 : -1;
}

/* A generic-param value: token / fast quoted-string.  Returns the end, or -1. */
static Py_ssize_t
gen_value(uc *s, Py_ssize_t i, Py_ssize_t n)
{
    Py_ssize_t j;
    if (i < n && s[i] == '"')
        return quoted(s, i, n);
    j = run(s, i, n, C_TOK);
    return j > i ? j : -1;
}

/* _FAST_PARAMS = *( ";" token [ "=" ( token / quoted-string ) ] ).  Returns the end, or -1. */
static Py_ssize_t
params(uc *s, Py_ssize_t i, Py_ssize_t n)
{
    while (i < n && s[i] == ';') {
        Py_ssize_t j = run(s, i + 1, n, C_TOK);
        if (j == i + 1)
            return -1;
        if (j < n && s[j] == '=' && (j = gen_value(s, j + 1, n)) < 0)
            return -1;
        i = j;
    }
    return i;
}

/* FAST_SIP_URI = "sip" ["s"] ":" [ user [ ":" password ] "@" ] hostport
 *                *( ";" uri-param [ "=" uri-param ] )          (no "?" headers)
 * Returns the end, or -1. */
static Py_ssize_t
sip_uri(uc *s, Py_ssize_t i, Py_ssize_t n)
{
    Py_ssize_t j;
    if (starts(s, i, n, "sip:"))
        i += 4;
    else if (starts(s, i, n, "sips:"))
        i += 5;
    else
        return -1;
    j = run_esc(s, i, n, C_USER);
    if (j > i) { /* userinfo only when "@" follows, as the regex's optional group decides */
        if (j < n && s[j] == ':')
            j = run_esc(s, j + 1, n, C_PASS);
        if (j < n && s[j] == '@')
            i = j + 1;
    }
    if ((i = hostport(s, i, n)) < 0)
        return -1;
    while (i < n && s[i] == ';') {
        j = run_esc(s, i + 1, n, C_PARAM);
        if (j == i + 1)
            return -1;
        if (j < n && s[j] == '=') {
            i = j + 1;
            if ((j = run_esc(s, i, n, C_PARAM)) == i)
                return -1;
        }
        i = j;
    }
    return i;
}

/* From / To (subset of FAST_NAME_ADDR):
 *   [ quoted-string *SP / token *( 1*SP token ) *SP ] "<" SIP-URI ">" params */
static int
name_addr(uc *s, Py_ssize_t n)
{
    Py_ssize_t i = 0, k;
    if (n > 0 && s[0] == '"') {
        if ((i = quoted(s, 0, n)) < 0)
            return 0;
        while (i < n && s[i] == ' ')
            i++;
    }
    else if (n > 0 && (cls[s[0]] & C_TOK)) {
        i = run(s, 0, n, C_TOK);
        for (;;) {
            for (k = i; k < n && s[k] == ' '; k++)
                ;
            if (k == i || k >= n || !(cls[s[k]] & C_TOK)) {
                i = k;
                break;
            }
            i = run(s, k, n, C_TOK);
        }
    }
    if (i >= n || s[i] != '<')
        return 0; /* a bare addr-spec: left to the regex */
    i = sip_uri(s, i + 1, n);
    if (i < 0 || i >= n || s[i] != '>')
        return 0;
    return params(s, i + 1, n) == n;
}

/* Token s[a:b] equals text (case-sensitive when ci is 0). */
static int
token_is(uc *s, Py_ssize_t a, Py_ssize_t b, const char *text, int ci)
{
    size_t len = strlen(text);
    if ((size_t)(b - a) != len)
        return 0;
    return ci ? PyOS_strnicmp((const char *)s + a, text, len) == 0
              : memcmp(s + a, text, len) == 0;
}

/* Does the token s[a:b] start, in any case, with one of the five via-params the regexes treat
 * apart (branch, maddr, received, ttl, rport)?  A generic parameter named so is refused. */
static int
via_special_prefix(uc *s, Py_ssize_t a, Py_ssize_t b)
{
    static const char *special[] = {"branch", "maddr", "received", "ttl", "rport"};
    for (size_t k = 0; k < sizeof special / sizeof *special; k++) {
        size_t len = strlen(special[k]);
        if ((size_t)(b - a) >= len && PyOS_strnicmp((const char *)s + a, special[k], len) == 0)
            return 1;
    }
    return 0;
}

/* Via, one via-parm (subset of FAST_VIA_LIST):
 *   "SIP/2.0/" token SP hostport *( ";" via-param )
 *   via-param = ( "branch" / "maddr" / "received" ) "=" token / "ttl=" 1*DIGIT
 *             / "rport" [ "=" 1*DIGIT ] / other-token [ "=" ( token / quoted-string ) ]
 * where other-token does not start with one of those five names in any case (the regex tries
 * ";rport" first, so ";rportx" fails there: refuse such names rather than mirror that). */
static int
via(uc *s, Py_ssize_t n)
{
    Py_ssize_t i;
    if (!starts(s, 0, n, "SIP/2.0/"))
        return 0;
    i = run(s, 8, n, C_TOK);
    if (i == 8 || i >= n || s[i] != ' ')
        return 0;
    if ((i = hostport(s, i + 1, n)) < 0)
        return 0;
    while (i < n && s[i] == ';') {
        Py_ssize_t a = i + 1, b = run(s, a, n, C_TOK), v = b + 1;
        int eq = b < n && s[b] == '=';
        if (b == a)
            return 0;
        if (token_is(s, a, b, "branch", 0) || token_is(s, a, b, "maddr", 0)
            || token_is(s, a, b, "received", 0)) {
            i = eq ? run(s, v, n, C_TOK) : v;
            if (i == v)
                return 0;
        }
        else if (token_is(s, a, b, "ttl", 0) || token_is(s, a, b, "rport", 0)) {
            if (!eq && s[a] == 't')
                return 0; /* ttl needs its value, rport not */
            i = eq ? run(s, v, n, C_DIGIT) : b;
            if (eq && i == v)
                return 0;
        }
        else {
            if (via_special_prefix(s, a, b))
                return 0;
            i = eq ? gen_value(s, v, n) : b;
            if (i < 0)
                return 0;
        }
    }
    return i == n;
}

/* CALL_ID = word [ "@" word ] */
static int
call_id(uc *s, Py_ssize_t n)
{
    Py_ssize_t i = run(s, 0, n, C_WORD), j;
    if (i == 0)
        return 0;
    if (i == n)
        return 1;
    if (s[i] != '@')
        return 0;
    j = run(s, i + 1, n, C_WORD);
    return j > i + 1 && j == n;
}

/* FAST_CSEQ = 1*9DIGIT SP token */
static int
cseq(uc *s, Py_ssize_t n)
{
    Py_ssize_t i = run(s, 0, n, C_DIGIT);
    if (i < 1 || i > 9 || i >= n || s[i] != ' ')
        return 0;
    return i + 1 < n && run(s, i + 1, n, C_TOK) == n;
}

/* ---- configuration: parser.py's caches and call-backs ------------------------------------ */
static PyObject *line_cache;  /* dict: canonical line -> ((name, value), key) */
static PyObject *scan_line;   /* parser._scan_line(line) -> (entry, status) */
static PyObject *fast_ruri;   /* parser._fast_ruri(uri) -> bool (caches what it proves) */
static PyObject *ruri_cache;  /* dict: Request-URIs proven */
static PyObject *single_keys; /* frozenset of lower-case single-valued header names */
static PyObject *parse_error; /* SipParseError: a call-back raising it means "not proven" */

/* The five recognised headers (all mandatory): canonical name, its length, key, recogniser. */
static struct {
    const char *name;
    Py_ssize_t len; /* of name and key */
    const char *key;
    int (*check)(uc *, Py_ssize_t);
    PyObject *name_obj;
    PyObject *key_obj;
} known[] = {
    {"Via", 3, "via", via, NULL, NULL},
    {"From", 4, "from", name_addr, NULL, NULL},
    {"To", 2, "to", name_addr, NULL, NULL},
    {"Call-ID", 7, "call-id", call_id, NULL, NULL},
    {"CSeq", 4, "cseq", cseq, NULL, NULL},
};
#define N_KNOWN 5
#define K_CSEQ 4
#define K_CONTENT_LENGTH N_KNOWN /* key index of "content-length" (no recogniser) */
#define MAX_SINGLES 32

static PyObject *
configure(PyObject *self, PyObject *args)
{
    PyObject *objs[6];
    if (!PyArg_ParseTuple(args, "O!OOO!O!O:configure", &PyDict_Type, &objs[0], &objs[1],
                          &objs[2], &PyDict_Type, &objs[3], &PyFrozenSet_Type, &objs[4], &objs[5]))
        return NULL;
    PyObject **slots[6] = {&line_cache, &scan_line, &fast_ruri, &ruri_cache, &single_keys,
                           &parse_error};
    for (int k = 0; k < 6; k++) {
        Py_INCREF(objs[k]);
        Py_XSETREF(*slots[k], objs[k]);
    }
    Py_RETURN_NONE;
}

/* A str of the printable ASCII bytes s[0:n]. */
static PyObject *
ascii(uc *s, Py_ssize_t n)
{
    PyObject *text = PyUnicode_New(n, 127);
    if (text != NULL)
        memcpy(PyUnicode_1BYTE_DATA(text), s, (size_t)n);
    return text;
}

/* Which of the keys we track `key` is: 0..4 (known[]), K_CONTENT_LENGTH, or -1. */
static int
key_index(PyObject *key)
{
    if (!PyUnicode_IS_COMPACT_ASCII(key))
        return -1;
    const char *text = (const char *)PyUnicode_1BYTE_DATA(key);
    Py_ssize_t len = PyUnicode_GET_LENGTH(key);
    for (int k = 0; k < N_KNOWN; k++)
        if (key == known[k].key_obj || (known[k].len == len && memcmp(text, known[k].key, len) == 0))
            return k;
    if (len == 14 && memcmp(text, "content-length", 14) == 0)
        return K_CONTENT_LENGTH;
    return -1;
}

/* Two str equal, both compact ASCII (else 1: "maybe equal", the caller then says None). */
static int
same_ascii(PyObject *a, PyObject *b)
{
    if (a == b || !PyUnicode_IS_COMPACT_ASCII(a) || !PyUnicode_IS_COMPACT_ASCII(b))
        return 1;
    return PyUnicode_GET_LENGTH(a) == PyUnicode_GET_LENGTH(b)
           && memcmp(PyUnicode_1BYTE_DATA(a), PyUnicode_1BYTE_DATA(b),
                     (size_t)PyUnicode_GET_LENGTH(a)) == 0;
}

/* Append (name, value) and key of one header line s[0:n] to items/keys.
 * Returns 1 when done, 2 when done but the line is not in canonical form (extra blanks, a compact
 * or differently cased name: the raw header block cannot be reused), 0 when the line is not
 * proven (caller returns None), -1 on error. */
static int
header_line(uc *s, Py_ssize_t n, PyObject *items, PyObject *keys)
{
    /* Recognised headers: "Name: value", value without surrounding blanks. */
    for (int k = 0; k < N_KNOWN; k++) {
        Py_ssize_t len = known[k].len;
        if (len + 2 < n && s[0] == known[k].name[0] && s[len] == ':'
            && memcmp(s, known[k].name, (size_t)len) == 0
            && s[len + 1] == ' ' && s[len + 2] != ' ' && s[n - 1] != ' '
            && known[k].check(s + len + 2, n - len - 2)) {
            PyObject *value = ascii(s + len + 2, n - len - 2), *item;
            if (value == NULL)
                return -1;
            item = PyTuple_Pack(2, known[k].name_obj, value);
            Py_DECREF(value);
            if (item == NULL)
                return -1;
            int rc = PyList_Append(items, item);
            Py_DECREF(item);
            if (rc < 0 || PyList_Append(keys, known[k].key_obj) < 0)
                return -1;
            return 1;
        }
    }
    /* Anything else: the line cache, then parser._scan_line. */
    PyObject *line = ascii(s, n), *entry, *found = NULL;
    int noncanonical = 0;
    if (line == NULL)
        return -1;
    entry = PyDict_GetItemWithError(line_cache, line); /* borrowed */
    if (entry != NULL) {
        Py_INCREF(entry);
    }
    else if (PyErr_Occurred()) {
        Py_DECREF(line);
        return -1;
    }
    else {
        found = PyObject_CallOneArg(scan_line, line);
        if (found == NULL) {
            Py_DECREF(line);
            if (!PyErr_ExceptionMatches(parse_error))
                return -1;
            PyErr_Clear(); /* the pure path raises the same error */
            return 0;
        }
        if (!PyTuple_Check(found) || PyTuple_GET_SIZE(found) != 2
            || !PyLong_CheckExact(PyTuple_GET_ITEM(found, 1))) {
            PyErr_SetString(PyExc_TypeError, "_scan_line returned an unexpected value");
            goto fail;
        }
        long status = PyLong_AsLong(PyTuple_GET_ITEM(found, 1));
        if (status == -1 && PyErr_Occurred())
            goto fail;
        if (status & ~1L) { /* not proven (parser._UNPROVEN): the pure path decides */
            Py_DECREF(line);
            Py_DECREF(found);
            return 0;
        }
        noncanonical = status != 0; /* parser._NONCANONICAL: e.g. "Content-Length:   206" */
        entry = PyTuple_GET_ITEM(found, 0);
        Py_INCREF(entry);
        Py_CLEAR(found);
    }
    Py_DECREF(line);
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2
        || !PyUnicode_Check(PyTuple_GET_ITEM(entry, 1))) {
        PyErr_SetString(PyExc_TypeError, "unexpected header line entry");
        Py_DECREF(entry);
        return -1;
    }
    int rc = PyList_Append(items, PyTuple_GET_ITEM(entry, 0)) < 0
                     || PyList_Append(keys, PyTuple_GET_ITEM(entry, 1)) < 0
                 ? -1
                 : (noncanonical ? 2 : 1);
    Py_DECREF(entry);
    return rc;
fail:
    Py_DECREF(line);
    Py_DECREF(found);
    return -1;
}

/* Value of items[index] (a (name, value) tuple) as ASCII bytes, or NULL. */
static uc *
item_value(PyObject *items, Py_ssize_t index, Py_ssize_t *len)
{
    PyObject *item = PyList_GET_ITEM(items, index), *value;
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2)
        return NULL;
    value = PyTuple_GET_ITEM(item, 1);
    if (!PyUnicode_Check(value) || !PyUnicode_IS_COMPACT_ASCII(value))
        return NULL;
    *len = PyUnicode_GET_LENGTH(value);
    return PyUnicode_1BYTE_DATA(value);
}

/* End of the line starting at s[i]: its CR, or the end of the header section. */
static Py_ssize_t
line_end_at(uc *s, Py_ssize_t i, Py_ssize_t end)
{
    uc *cr = memchr(s + i, '\r', (size_t)(end - i));
    return cr == NULL ? end : cr - s;
}

/* The start line: "SIP/2.0 SP 3DIGIT SP Reason-Phrase" (status 100-699) or
 * "token SP Request-URI SP SIP/2.0" (the URI without SP).  Sets *first to the status (int) or the
 * method, *second to the reason or the URI.  Returns 1, 0 (not recognised) or -1 (error). */
static int
start_line(uc *line, Py_ssize_t len, PyObject **first, PyObject **second)
{
    if (starts(line, 0, len, "SIP/2.0 ")) {
        if (len < 12 || !(cls[line[8]] & C_DIGIT) || !(cls[line[9]] & C_DIGIT)
            || !(cls[line[10]] & C_DIGIT) || line[11] != ' ' || line[8] < '1' || line[8] > '6')
            return 0;
        *first = PyLong_FromLong((line[8] - '0') * 100 + (line[9] - '0') * 10 + (line[10] - '0'));
        return *first != NULL && (*second = ascii(line + 12, len - 12)) != NULL ? 1 : -1;
    }
    Py_ssize_t m = run(line, 0, len, C_TOK), u = m + 1;
    while (u < len && line[u] != ' ')
        u++;
    if (m == 0 || m >= len || line[m] != ' ' || u == m + 1 || u + 8 != len
        || memcmp(line + u, " SIP/2.0", 8) != 0)
        return 0;
    *first = ascii(line, m);
    return *first != NULL && (*second = ascii(line + m + 1, u - m - 1)) != NULL ? 1 : -1;
}

/* parser._proven and parser._body on the parsed lines: the mandatory headers present, the
 * single-valued ones once, at most one Content-Length = 1*9DIGIT not beyond the `rest` octets
 * after the header section (its value in *length, else -1); for a request the CSeq method equal to
 * the method and the Request-URI in the R-URI cache or proven by parser._fast_ruri.
 * Returns 1, 0 (not proven) or -1 (error). */
static int
proven(PyObject *items, PyObject *keys, PyObject *first, PyObject *second, Py_ssize_t rest,
       Py_ssize_t *length)
{
    PyObject *singles[MAX_SINGLES];
    Py_ssize_t index[N_KNOWN + 1], n_singles = 0, vlen;
    int rc;
    uc *v;

    for (int k = 0; k <= N_KNOWN; k++)
        index[k] = -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        int k = key_index(key);
        if (k >= 0) {
            if (k == K_CONTENT_LENGTH && index[k] >= 0)
                return 0; /* Multiple Content-Length headers */
            if (index[k] < 0)
                index[k] = i;
        }
        if ((rc = PySet_Contains(single_keys, key)) <= 0) {
            if (rc < 0)
                return -1;
            continue;
        }
        if (n_singles == MAX_SINGLES) /* more than there are single-valued names */
            return 0;
        for (Py_ssize_t j = 0; j < n_singles; j++)
            if (same_ascii(singles[j], key))
                return 0;
        singles[n_singles++] = key;
    }
    for (int k = 0; k < N_KNOWN; k++)
        if (index[k] < 0)
            return 0; /* Missing a mandatory header */
    *length = -1;
    if (index[K_CONTENT_LENGTH] >= 0) {
        v = item_value(items, index[K_CONTENT_LENGTH], &vlen);
        if (v == NULL || vlen < 1 || vlen > 9 || run(v, 0, vlen, C_DIGIT) != vlen)
            return 0;
        *length = 0;
        for (Py_ssize_t i = 0; i < vlen; i++)
            *length = *length * 10 + (v[i] - '0');
        if (*length > rest)
            return 0;
    }
    if (!PyUnicode_Check(first)) /* a response */
        return 1;
    Py_ssize_t sp = 0;
    if ((v = item_value(items, index[K_CSEQ], &vlen)) == NULL)
        return 0;
    while (sp < vlen && v[sp] != ' ')
        sp++;
    if (sp == vlen || vlen - sp - 1 != PyUnicode_GET_LENGTH(first)
        || memcmp(v + sp + 1, PyUnicode_1BYTE_DATA(first), (size_t)(vlen - sp - 1)) != 0)
        return 0;
    if ((rc = PyDict_Contains(ruri_cache, second)) != 0)
        return rc;
    PyObject *ok = PyObject_CallOneArg(fast_ruri, second);
    if (ok == NULL)
        return -1;
    rc = PyObject_IsTrue(ok);
    Py_DECREF(ok);
    return rc;
}

static PyObject *
parse(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *data, *items = NULL, *keys = NULL, *first = NULL, *second = NULL, *body = NULL;
    PyObject *raw = NULL, *length_obj = NULL, *result = NULL;
    Py_ssize_t n, start = 0, end, line_end, length;
    int datagram, rc;
    uc *s;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "parse(data, datagram)");
        return NULL;
    }
    if (line_cache == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.configure() was not called");
        return NULL;
    }
    data = args[0];
    if (!PyBytes_CheckExact(data) || (datagram = PyObject_IsTrue(args[1])) < 0) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    s = (uc *)PyBytes_AS_STRING(data);
    n = PyBytes_GET_SIZE(data);

    /* Framing: leading CRLFs skipped (RFC 3261 §7.5), the header section ends at the first
     * CRLF CRLF.  On the way: printable ASCII only, CR only in CRLF, no folding (no line starts
     * with SP/HT).  Without CRLF CRLF, or with an empty header section: None. */
    while (start + 1 < n && s[start] == '\r' && s[start + 1] == '\n')
        start += 2;
    for (end = start;; end++) {
        if (end >= n)
            Py_RETURN_NONE;
        if (s[end] >= 0x20 && s[end] <= 0x7e)
            continue;
        if (s[end] != '\r' || end + 3 >= n || s[end + 1] != '\n')
            Py_RETURN_NONE;
        if (s[end + 2] == '\r' && s[end + 3] == '\n')
            break;
        if (s[end + 2] == ' ' || s[end + 2] == '\t')
            Py_RETURN_NONE;
        end++;
    }
    if (end == start)
        Py_RETURN_NONE;

    line_end = line_end_at(s, start, end);
    if ((rc = start_line(s + start, line_end - start, &first, &second)) <= 0)
        goto none_or_error;
    Py_ssize_t head_end = line_end; /* the raw header block starts with this CRLF */
    if ((items = PyList_New(0)) == NULL || (keys = PyList_New(0)) == NULL)
        goto done;
    int noncanonical = 0;
    for (Py_ssize_t p = line_end + 2; p < end + 2; p = line_end + 2) {
        line_end = line_end_at(s, p, end);
        if ((rc = header_line(s + p, line_end - p, items, keys)) <= 0)
            goto none_or_error;
        noncanonical |= rc == 2;
    }
    if ((rc = proven(items, keys, first, second, n - (end + 4), &length)) <= 0)
        goto none_or_error;

    /* The body framed by Content-Length (RFC 3261 §18.3), and the raw header block. */
    if (length >= 0) {
        body = PyBytes_FromStringAndSize((const char *)s + end + 4, length);
        if (noncanonical) { /* as parser._parse: no raw block, length -1 */
            raw = Py_NewRef(Py_None);
            length = -1;
        }
        else
            raw = PyBytes_FromStringAndSize((const char *)s + head_end, end + 4 - head_end);
    }
    else {
        body = PyBytes_FromStringAndSize((const char *)s + end + 4, datagram ? n - (end + 4) : 0);
        raw = Py_NewRef(Py_None);
    }
    if (body != NULL && raw != NULL && (length_obj = PyLong_FromSsize_t(length)) != NULL)
        result = PyTuple_Pack(7, first, second, items, keys, body, raw, length_obj);
    goto done;

none_or_error:
    if (rc == 0)
        result = Py_NewRef(Py_None);
done:
    Py_XDECREF(first);
    Py_XDECREF(second);
    Py_XDECREF(items);
    Py_XDECREF(keys);
    Py_XDECREF(body);
    Py_XDECREF(raw);
    Py_XDECREF(length_obj);
    return result;
}

/* recognise(kind, value): the recogniser for header `kind` (a canonical name of the five) on
 * `value`; for tests of the subset property against grammar.py. */
static PyObject *
recognise(PyObject *self, PyObject *args)
{
    const char *kind, *value;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "sy#:recognise", &kind, &value, &n))
        return NULL;
    for (int k = 0; k < N_KNOWN; k++)
        if (strcmp(kind, known[k].name) == 0) {
            for (Py_ssize_t i = 0; i < n; i++)
                if ((uc)value[i] < 0x20 || (uc)value[i] > 0x7e)
                    Py_RETURN_FALSE; /* parse() never passes such bytes */
            return PyBool_FromLong(known[k].check((uc *)value, n));
        }
    PyErr_SetString(PyExc_ValueError, "unknown header");
    return NULL;
}

/* ---- split_via: uri.parse_via's first path ------------------------------------------------
 * split_via(item, via_class) -> Via | None.  The via-parm `item` in the shape of grammar.SPLIT_VIA
 * (a subset of it), returned as via_class(TRANSPORT, host, port, params) exactly as uri.parse_via
 * builds it from that regex; None for anything else (then parse_via's regexes decide):
 *   "SIP/2.0/" 1*ALPHA SP hostname [ ":" port ] *( ";" via-param )   (hostport() above)
 *   via-param = ( "branch" / "maddr" ) "=" token / "received=" ( token / "[" 1*(HEX / ":" / ".") "]" )
 *             / "rport" [ "=" 1*DIGIT ] / "ttl=" 1*DIGIT / other-name [ "=" token ]
 * where other-name does not start with one of the five names in any case (as via() above), and at
 * most MAX_VIA_PARAMS parameters.  Why (issue 8): the regex, the groups and the NamedTuple's
 * Python-level __new__ were 6 % of a PUBLISH's instructions. */
#define MAX_VIA_PARAMS 16

static PyObject *
ascii_text(uc *s, Py_ssize_t a, Py_ssize_t b)
{
    PyObject *text = PyUnicode_New(b - a, 127);
    if (text != NULL)
        memcpy(PyUnicode_1BYTE_DATA(text), s + a, (size_t)(b - a));
    return text;
}

/* One via-param at s[i] == ';': its name [a, b) and value [*va, *vb) (*va = -1: none); the end or -1. */
static Py_ssize_t
via_param(uc *s, Py_ssize_t i, Py_ssize_t n, Py_ssize_t *b_out, Py_ssize_t *va, Py_ssize_t *vb)
{
    Py_ssize_t a = i + 1, b = run(s, a, n, C_TOK), v = b + 1, end;
    int eq = b < n && s[b] == '=';
    *b_out = b;
    *va = -1;
    if (b == a)
        return -1;
    if (token_is(s, a, b, "branch", 0) || token_is(s, a, b, "maddr", 0))
        end = eq ? run(s, v, n, C_TOK) : v;
    else if (token_is(s, a, b, "received", 0)) {
        if (eq && v < n && s[v] == '[') {
            end = v + 1;
            while (end < n && ((cls[s[end]] & C_HEX) || s[end] == ':' || s[end] == '.'))
                end++;
            end = (end > v + 1 && end < n && s[end] == ']') ? end + 1 : v;
        }
        else
            end = eq ? run(s, v, n, C_TOK) : v;
    }
    else if (token_is(s, a, b, "ttl", 0) || token_is(s, a, b, "rport", 0)) {
        if (!eq) {
            if (s[a] == 't')
                return -1; /* ttl needs its value, rport not */
            return b;
        }
        end = run(s, v, n, C_DIGIT);
    }
    else {
        if (via_special_prefix(s, a, b))
            return -1;
        if (!eq)
            return b;
        end = run(s, v, n, C_TOK);
    }
    if (end == v)
        return -1; /* "=" without a value */
    *va = v;
    *vb = end;
    return end;
}

/* The parameters as uri._split_params gives them: ((name, value or None), ...). */
static PyObject *
via_params(uc *s, Py_ssize_t count, Py_ssize_t spans[][4])
{
    PyObject *params = PyTuple_New(count);
    if (params == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *pair = PyTuple_New(2), *name, *value;
        if (pair == NULL) {
            Py_DECREF(params);
            return NULL;
        }
        PyTuple_SET_ITEM(params, k, pair);
        if ((name = ascii_text(s, spans[k][0], spans[k][1])) == NULL) {
            Py_DECREF(params);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        if (spans[k][2] < 0)
            value = Py_NewRef(Py_None);
        else if ((value = ascii_text(s, spans[k][2], spans[k][3])) == NULL) {
            Py_DECREF(params);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 1, value);
    }
    return params;
}

static PyObject *protocol_text; /* "SIP/2.0" */

static PyObject *
split_via(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t spans[MAX_VIA_PARAMS][4], count = 0;
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyType_Check(args[1])
        || !PyType_FastSubclass((PyTypeObject *)args[1], Py_TPFLAGS_TUPLE_SUBCLASS)
        || ((PyTypeObject *)args[1])->tp_basicsize != PyTuple_Type.tp_basicsize) {
        PyErr_SetString(PyExc_TypeError, "split_via(item: str, via_class: tuple subclass)");
        return NULL;
    }
    if (!PyUnicode_IS_COMPACT_ASCII(args[0]))
        Py_RETURN_NONE;
    uc *s = PyUnicode_1BYTE_DATA(args[0]);
    Py_ssize_t n = PyUnicode_GET_LENGTH(args[0]), i, host, colon, end;
    if (!starts(s, 0, n, "SIP/2.0/"))
        Py_RETURN_NONE;
    for (i = 8; i < n && (cls[s[i]] & C_ALNUM) && !(cls[s[i]] & C_DIGIT); i++)
        ;
    if (i == 8 || i >= n || s[i] != ' ')
        Py_RETURN_NONE;
    host = i + 1;
    if ((end = hostport(s, host, n)) < 0)
        Py_RETURN_NONE;
    for (colon = host; colon < end && s[colon] != ':'; colon++)
        ;
    i = end;
    while (i < n && s[i] == ';') {
        if (count == MAX_VIA_PARAMS)
            Py_RETURN_NONE;
        Py_ssize_t *span = spans[count++];
        span[0] = i + 1;
        if ((i = via_param(s, i, n, &span[1], &span[2], &span[3])) < 0)
            Py_RETURN_NONE;
    }
    if (i != n)
        Py_RETURN_NONE;

    PyTypeObject *via_class = (PyTypeObject *)args[1];
    PyObject *via = via_class->tp_alloc(via_class, 5), *item;
    if (via == NULL)
        return NULL;
    /* Filled in order; a failure leaves NULL items, which tuple deallocation skips. */
    if ((item = ascii_text(s, 8, host - 1)) == NULL)
        goto fail;
    for (Py_ssize_t k = 0; k < host - 9; k++)
        PyUnicode_1BYTE_DATA(item)[k] = (Py_UCS1)Py_TOUPPER(PyUnicode_1BYTE_DATA(item)[k]);
    PyTuple_SET_ITEM(via, 0, item);
    if ((item = ascii_text(s, host, colon)) == NULL)
        goto fail;
    PyTuple_SET_ITEM(via, 1, item);
    if (colon == end)
        item = Py_NewRef(Py_None);
    else {
        long port = 0;
        for (Py_ssize_t d = colon + 1; d < end; d++)
            port = port * 10 + (s[d] - '0');
        if ((item = PyLong_FromLong(port)) == NULL)
            goto fail;
    }
    PyTuple_SET_ITEM(via, 2, item);
    if ((item = via_params(s, count, spans)) == NULL)
        goto fail;
    PyTuple_SET_ITEM(via, 3, item);
    PyTuple_SET_ITEM(via, 4, Py_NewRef(protocol_text));
    return via;
fail:
    Py_DECREF(via);
    return NULL;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "Give the parser's caches and call-backs."},
    {"parse", (PyCFunction)(void (*)(void))parse, METH_FASTCALL,
     "parse(data, datagram) -> tuple | None: the canonical fast path of parse_message."},
    {"recognise", recognise, METH_VARARGS, "Run one header recogniser (tests)."},
    {"split_via", (PyCFunction)(void (*)(void))split_via, METH_FASTCALL,
     "split_via(item, via_class) -> Via | None: the first path of uri.parse_via."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "C fast path of presence_sip.sip.parser.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    init_classes();
    if (protocol_text == NULL && (protocol_text = PyUnicode_InternFromString("SIP/2.0")) == NULL)
        return NULL;
    for (int k = 0; k < N_KNOWN; k++) {
        if (known[k].name_obj == NULL
            && ((known[k].name_obj = PyUnicode_InternFromString(known[k].name)) == NULL
                || (known[k].key_obj = PyUnicode_InternFromString(known[k].key)) == NULL))
            return NULL;
    }
    return PyModule_Create(&module);
}
