/* Optional C fast path of presence_sip.presence.pidf (the regex path stays the reference).
 *
 * simple_pidf(body) recognises the usual PUBLISH body: the language of pidf._SIMPLE_PIDF (one
 * presentity, tuples with a <basic> and notes, the default namespace, no escapes), with the
 * checks pidf._simple_pidf adds (the entity is a sip, sips, pres or tel URI; tuple ids are
 * unique).  It returns exactly what pidf._simple_pidf returns, (entity, canonical document), or
 * None whenever that function would, and also for a body of more than MAX_TUPLES tuples (then
 * lxml decides).  tests/unit/test_pidf.py checks both on generated and mutated bodies.
 *
 * Why (issue 8): the regex walked every byte of every PUBLISH body through the sre engine, 14 %
 * of a PUBLISH's instructions; this scanner makes one pass that copies the canonical form.
 *
 * The grammar, as pidf.py writes it (BLANKS: [ \t\r\n]*, PLAIN: printable ASCII but SP " & ' < >):
 *   DOC   := ['<?xml version="1.0"' [' encoding="UTF-8"'] '?>'] BLANKS PRES BLANKS
 *   PRES  := '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="' PLAIN+ '">' BLANKS
 *            TUPLE+ NOTE* '</presence>'
 *   TUPLE := '<tuple id="' PLAIN+ '">' BLANKS '<status>' BLANKS '<basic>' ('open' | 'closed')
 *            '</basic>' BLANKS '</status>' BLANKS NOTE* '</tuple>' BLANKS
 *   NOTE  := '<note>' PLAIN+ (SP+ PLAIN+)* '</note>' BLANKS
 * Every choice is decided by the next few bytes ("<tuple", "<note>", "</"), so the possessive
 * regex and this scanner take the same bodies.  The canonical document is the XML declaration
 * lxml writes, then PRES with its BLANKS left out: they all lie between a '>' and a '<', which is
 * what pidf._simple_pidf removes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef const unsigned char uc;

#define MAX_TUPLES 32 /* beyond this many tuples: None (the id check stays small) */

static const char DECLARATION[] = "<?xml version='1.0' encoding='UTF-8'?>\n";
#define DECLARATION_LEN ((Py_ssize_t)(sizeof(DECLARATION) - 1))

static int
is_plain(unsigned char c)
{
    return c == '!' || (c >= '#' && c <= '%') || (c >= '(' && c <= ';') || c == '=' ||
           (c >= '?' && c <= '~');
}

static int
is_blank(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

typedef struct {
    uc *s;           /* the body */
    Py_ssize_t n;    /* its length */
    Py_ssize_t i;    /* where the scan is */
    char *out;       /* the canonical document being written */
    Py_ssize_t o;    /* its length so far */
    Py_ssize_t ids[MAX_TUPLES][2]; /* start and length of each tuple id */
    int tuples;
} Scan;

/* The literal t (len bytes) at the scan position: consumed and copied. */
static int
literal(Scan *p, const char *t, Py_ssize_t len)
{
    if (p->n - p->i < len || memcmp(p->s + p->i, t, (size_t)len) != 0)
        return 0;
    memcpy(p->out + p->o, t, (size_t)len);
    p->o += len;
    p->i += len;
    return 1;
}
#define LITERAL(p, t) literal((p), (t), (Py_ssize_t)(sizeof(t) - 1))

/* The literal t at the scan position: consumed, not copied. */
static int
skip(Scan *p, const char *t, Py_ssize_t len)
{
    if (p->n - p->i < len || memcmp(p->s + p->i, t, (size_t)len) != 0)
        return 0;
    p->i += len;
    return 1;
}
#define SKIP(p, t) skip((p), (t), (Py_ssize_t)(sizeof(t) - 1))

/* Does the literal t start at the scan position?  (Nothing consumed.) */
static int
ahead(Scan *p, const char *t, Py_ssize_t len)
{
    return p->n - p->i >= len && memcmp(p->s + p->i, t, (size_t)len) == 0;
}
#define AHEAD(p, t) ahead((p), (t), (Py_ssize_t)(sizeof(t) - 1))

/* BLANKS: consumed, not copied. */
static void
blanks(Scan *p)
{
    while (p->i < p->n && is_blank(p->s[p->i]))
        p->i++;
}

/* PLAIN+: consumed and copied; its length (0: no match, nothing consumed). */
static Py_ssize_t
plain(Scan *p)
{
    Py_ssize_t start = p->i;
    while (p->i < p->n && is_plain(p->s[p->i]))
        p->i++;
    Py_ssize_t len = p->i - start;
    memcpy(p->out + p->o, p->s + start, (size_t)len);
    p->o += len;
    return len;
}

/* NOTE, after AHEAD "<note>". */
static int
note(Scan *p)
{
    if (!LITERAL(p, "<note>") || plain(p) == 0)
        return 0;
    for (;;) { /* (SP+ PLAIN+)*: spaces count only when text follows them */
        Py_ssize_t j = p->i;
        while (j < p->n && p->s[j] == ' ')
            j++;
        if (j == p->i || j == p->n || !is_plain(p->s[j]))
            break;
        memcpy(p->out + p->o, p->s + p->i, (size_t)(j - p->i));
        p->o += j - p->i;
        p->i = j;
        plain(p);
    }
    if (!LITERAL(p, "</note>"))
        return 0;
    blanks(p);
    return 1;
}

/* NOTE* */
static int
notes(Scan *p)
{
    while (AHEAD(p, "<note>"))
        if (!note(p))
            return 0;
    return 1;
}

/* TUPLE, after AHEAD "<tuple "; records the id. */
static int
tuple(Scan *p)
{
    if (p->tuples == MAX_TUPLES || !LITERAL(p, "<tuple id=\""))
        return 0;
    Py_ssize_t start = p->i;
    Py_ssize_t len = plain(p);
    if (len == 0 || !LITERAL(p, "\">"))
        return 0;
    p->ids[p->tuples][0] = start;
    p->ids[p->tuples][1] = len;
    p->tuples++;
    blanks(p);
    if (!LITERAL(p, "<status>"))
        return 0;
    blanks(p);
    if (!LITERAL(p, "<basic>") || !(LITERAL(p, "open") || LITERAL(p, "closed")) ||
        !LITERAL(p, "</basic>"))
        return 0;
    blanks(p);
    if (!LITERAL(p, "</status>"))
        return 0;
    blanks(p);
    if (!notes(p) || !LITERAL(p, "</tuple>"))
        return 0;
    blanks(p);
    return 1;
}

/* The entity is a sip, sips, pres or tel URI (pidf._ENTITY_RE; PLAIN has no blanks or quotes). */
static int
entity_ok(uc *e, Py_ssize_t len)
{
    static const char *const schemes[] = {"sip:", "sips:", "pres:", "tel:"};
    for (size_t k = 0; k < sizeof(schemes) / sizeof(schemes[0]); k++) {
        Py_ssize_t slen = (Py_ssize_t)strlen(schemes[k]);
        if (len > slen && PyOS_strnicmp((const char *)e, schemes[k], slen) == 0)
            return 1;
    }
    return 0;
}

static int
ids_unique(Scan *p)
{
    for (int a = 1; a < p->tuples; a++)
        for (int b = 0; b < a; b++)
            if (p->ids[a][1] == p->ids[b][1] &&
                memcmp(p->s + p->ids[a][0], p->s + p->ids[b][0], (size_t)p->ids[a][1]) == 0)
                return 0;
    return 1;
}

/* DOC into p->out (already holding the declaration); the entity's place in the body. */
static int
document(Scan *p, Py_ssize_t *entity, Py_ssize_t *entity_len)
{
    if (SKIP(p, "<?xml version=\"1.0\"")) {
        SKIP(p, " encoding=\"UTF-8\"");
        if (!SKIP(p, "?>"))
            return 0;
    }
    blanks(p);
    if (!LITERAL(p, "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\""))
        return 0;
    *entity = p->i;
    *entity_len = plain(p);
    if (*entity_len == 0 || !LITERAL(p, "\">"))
        return 0;
    blanks(p);
    if (!AHEAD(p, "<tuple "))
        return 0;
    while (AHEAD(p, "<tuple "))
        if (!tuple(p))
            return 0;
    if (!notes(p) || !LITERAL(p, "</presence>"))
        return 0;
    blanks(p);
    return p->i == p->n;
}

static PyObject *
simple_pidf(PyObject *self, PyObject *body)
{
    if (!PyBytes_Check(body)) {
        PyErr_SetString(PyExc_TypeError, "simple_pidf() takes bytes");
        return NULL;
    }
    Scan p;
    p.s = (uc *)PyBytes_AS_STRING(body);
    p.n = PyBytes_GET_SIZE(body);
    p.i = 0;
    p.o = DECLARATION_LEN;
    p.tuples = 0;
    /* The canonical document is never longer than the declaration plus the body. */
    PyObject *out = PyBytes_FromStringAndSize(NULL, DECLARATION_LEN + p.n);
    if (out == NULL)
        return NULL;
    p.out = PyBytes_AS_STRING(out);
    memcpy(p.out, DECLARATION, (size_t)DECLARATION_LEN);
    Py_ssize_t entity = 0, entity_len = 0;
    if (!document(&p, &entity, &entity_len) || !entity_ok(p.s + entity, entity_len) ||
        !ids_unique(&p)) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    if (_PyBytes_Resize(&out, p.o) < 0)
        return NULL;
    PyObject *entity_text = PyUnicode_DecodeASCII((const char *)p.s + entity, entity_len, NULL);
    if (entity_text == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    PyObject *result = PyTuple_Pack(2, entity_text, out);
    Py_DECREF(entity_text);
    Py_DECREF(out);
    return result;
}

static PyMethodDef methods[] = {
    {"simple_pidf", simple_pidf, METH_O,
     "simple_pidf(body, /) -> (entity, canonical document) or None: pidf._simple_pidf in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "C fast path of presence_sip.presence.pidf.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
