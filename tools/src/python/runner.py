# Jielong's Python worker. Embedded in the Rust binary and started as
#   python -I -S -B -c <this file> <extra sys.path entries...>
# Protocol (all integers big-endian):
#   fd 3 (requests):  u32 length, then  b'R' u32 id u32 output_limit <utf-8 code>
#                                   or  b'X' (exit)
#   fd 4 (responses): u32 length, then fields: u8 tag, u32 length, bytes
#     I id | O stdout bytes | E stderr bytes | D omitted output bytes (ascii int)
#     V value repr | v full value length | T traceback | N exception type name
#     H a note: a repair made to the code, or a hint when it printed nothing
#   At start-up the worker sends one frame with the single field  R b'ready'.
# fds 1 and 2 are memfds: output written at the fd level (os.write, subprocesses, C
# code) is collected from them, in order with print() output.
# Only builtin modules are imported at start-up: json/ast/traceback cost more than
# Python's own start.
import sys
import os


def _jielong_main():
    import builtins
    import _io

    R, W = 3, 4
    extra_paths = sys.argv[1:]
    sys.argv = ['']
    sys.dont_write_bytecode = True
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = None
    if cwd and cwd not in sys.path:
        sys.path.insert(0, cwd)
    for p in extra_paths:
        if p and p not in sys.path and os.path.isdir(p):
            sys.path.append(p)

    def _exit(code=None):
        raise SystemExit(code)

    builtins.exit = builtins.quit = _exit

    # fd-level output goes to anonymous files; nothing can reach the protocol fds.
    for fd, name in ((1, 'stdout'), (2, 'stderr')):
        try:
            m = os.memfd_create(name, 0)
        except (AttributeError, OSError):
            path = '/tmp/.jielong-%s-%d' % (name, os.getpid())
            m = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            os.unlink(path)
        os.dup2(m, fd)
        os.close(m)

    class Capture:
        def __init__(self):
            self.reset(0)

        def reset(self, limit):
            self.chunks = []
            self.left = limit
            self.omitted = 0
            self.pos = [0, 0]
            for fd in (1, 2):
                try:
                    os.ftruncate(fd, 0)
                    os.lseek(fd, 0, 0)
                except OSError:
                    pass

        def _append(self, i, data, total):
            take = data[:self.left] if self.left > 0 else b''
            if take:
                if self.chunks and self.chunks[-1][0] == i:
                    self.chunks[-1][1].extend(take)
                else:
                    self.chunks.append((i, bytearray(take)))
                self.left -= len(take)
            self.omitted += total - len(take)

        def pull(self):
            for i in (0, 1):
                try:
                    size = os.fstat(i + 1).st_size
                except OSError:
                    continue
                start = self.pos[i]
                if size < start:
                    self.pos[i] = size
                elif size > start:
                    self.pos[i] = size
                    total = size - start
                    data = b''
                    if self.left > 0:
                        try:
                            data = os.pread(i + 1, min(total, self.left), start)
                        except OSError:
                            data = b''
                    self._append(i, data, total)

        def add(self, i, s):
            self.pull()
            if s.isascii():
                total = len(s)
                data = s[:self.left].encode('ascii') if self.left > 0 else b''
            else:
                data = s.encode('utf-8', 'backslashreplace')
                total = len(data)
            self._append(i, data, total)

        def add_bytes(self, i, b):
            self.pull()
            b = bytes(b)
            self._append(i, b, len(b))

    cap = Capture()

    class Binary:
        def __init__(self, i):
            self._i = i

        def write(self, b):
            cap.add_bytes(self._i, b)
            return len(b)

        def flush(self):
            pass

        def writable(self):
            return True

        def fileno(self):
            return self._i + 1

    class Text(_io._TextIOBase):
        encoding = 'utf-8'
        errors = 'backslashreplace'
        newlines = None

        def __init__(self, i):
            self._i = i
            self.buffer = Binary(i)

        def write(self, s):
            if not isinstance(s, str):
                raise TypeError('write() argument must be str, not %s' % type(s).__name__)
            cap.add(self._i, s)
            return len(s)

        def flush(self):
            pass

        def isatty(self):
            return False

        def writable(self):
            return True

        def fileno(self):
            return self._i + 1

    out, err = Text(0), Text(1)
    sys.stdout = sys.__stdout__ = out
    sys.stderr = sys.__stderr__ = err

    main = type(sys)('__main__')
    ns = main.__dict__
    ns['__builtins__'] = builtins
    sys.modules['__main__'] = main
    cells = {}

    def read_exact(n):
        parts = []
        while n > 0:
            b = os.read(R, min(n, 1 << 20))
            if not b:
                return None
            parts.append(b)
            n -= len(b)
        return b''.join(parts)

    def send(fields):
        parts = []
        for tag, data in fields:
            parts.append(tag)
            parts.append(len(data).to_bytes(4, 'big'))
            parts.append(data)
        body = b''.join(parts)
        view = memoryview(len(body).to_bytes(4, 'big') + body)
        while view:
            n = os.write(W, view)
            view = view[n:]

    def format_exception(e):
        import linecache
        import traceback
        for fn, src in cells.items():
            linecache.cache[fn] = (len(src), None, src.splitlines(True), fn)
        tb = e.__traceback__
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith('<cell-'):
            tb = tb.tb_next
        return ''.join(traceback.format_exception(type(e), e, tb))

    import _ast

    class _CellReturn(BaseException):
        # A top-level `return` in a cell: its value is the cell's value.
        def __init__(self, value):
            self.value = value

    ns['__jielong_return__'] = _CellReturn

    def _loc(new, old):
        for a in ('lineno', 'col_offset', 'end_lineno', 'end_col_offset'):
            setattr(new, a, getattr(old, a, 1))
        return new

    _SCOPES = (_ast.FunctionDef, _ast.AsyncFunctionDef, _ast.ClassDef, _ast.Lambda)

    def _returns_to_raise(stmts):
        # Rewrites top-level `return X` (also inside if/for/while/with/try, not in
        # functions or classes) to `raise __jielong_return__(X)`.
        found = False
        for i, st in enumerate(stmts):
            if isinstance(st, _ast.Return):
                value = st.value if st.value is not None else _loc(_ast.Constant(None), st)
                call = _loc(_ast.Call(_loc(_ast.Name('__jielong_return__', _ast.Load()), st),
                                      [value], []), st)
                stmts[i] = _loc(_ast.Raise(call, None), st)
                found = True
            elif not isinstance(st, _SCOPES):
                for field in ('body', 'orelse', 'finalbody'):
                    sub = getattr(st, field, None)
                    if isinstance(sub, list) and sub and isinstance(sub[0], _ast.stmt):
                        found = _returns_to_raise(sub) or found
                for h in getattr(st, 'handlers', None) or ():
                    found = _returns_to_raise(h.body) or found
                for c in getattr(st, 'cases', None) or ():
                    found = _returns_to_raise(c.body) or found
        return found

    def _walk(node, skip=None):
        # Every node under `node`, not descending into `skip`.
        todo = [node]
        while todo:
            cur = todo.pop()
            if cur is skip:
                continue
            yield cur
            for field in cur._fields:
                v = getattr(cur, field, None)
                if isinstance(v, list):
                    todo.extend(x for x in v if isinstance(x, _ast.AST))
                elif isinstance(v, _ast.AST):
                    todo.append(v)

    def _uncalled_functions(tree):
        # Top-level functions that nothing at the top level refers to.
        out = []
        for st in tree.body:
            if isinstance(st, (_ast.FunctionDef, _ast.AsyncFunctionDef)):
                used = False
                for other in tree.body:
                    if other is st:
                        continue
                    for node in _walk(other):
                        if isinstance(node, _ast.Name) and node.id == st.name:
                            used = True
                            break
                    if used:
                        break
                if not used:
                    a = st.args
                    required = len(a.posonlyargs) + len(a.args) - len(a.defaults)
                    required += sum(1 for d in a.kw_defaults if d is None)
                    out.append((st.name, required, isinstance(st, _ast.AsyncFunctionDef)))
        return out

    def _assigned_name(st):
        # The variable a statement assigns (`x = …`, `x += …`, `x: int = …`), if one.
        if isinstance(st, _ast.Assign) and len(st.targets) == 1:
            target = st.targets[0]
        elif isinstance(st, (_ast.AugAssign, _ast.AnnAssign)):
            target = st.target
        else:
            return None
        return target.id if isinstance(target, _ast.Name) else None

    def _fix_name_case(tree):
        # `Seattle_sheep` read where only `seattle_sheep` is defined: small models
        # change the case of their own variables. A read of a name that nothing
        # defines is renamed to the one defined name that differs only in case.
        defined = set(ns) | set(dir(builtins))
        loads = []
        for node in _walk(tree):
            if isinstance(node, _ast.Name):
                if isinstance(node.ctx, _ast.Load):
                    loads.append(node)
                else:
                    defined.add(node.id)
            elif isinstance(node, (_ast.FunctionDef, _ast.AsyncFunctionDef, _ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, _ast.arg):
                defined.add(node.arg)
            elif isinstance(node, _ast.alias):
                defined.add((node.asname or node.name).split('.')[0])
        by_lower = {}
        for name in defined:
            by_lower.setdefault(name.lower(), set()).add(name)
        fixed = {}
        for node in loads:
            if node.id in defined:
                continue
            match = by_lower.get(node.id.lower(), ())
            if len(match) == 1:
                new = next(iter(match))
                fixed[node.id] = new
                node.id = new
        return fixed

    def _parse(code, fn):
        # The cell's AST, repairing what small models get wrong when they escape code
        # into JSON: a stray closing brace at the end, escaped newlines. Returns the
        # tree and a note naming the repair (None when the code parsed as written).
        try:
            return compile(code, fn, 'exec', 0x400, True), None
        except SyntaxError as first:
            error = first
        repairs = []
        stripped = code.rstrip()
        if stripped.endswith('}') and stripped.count('}') > stripped.count('{'):
            cut = stripped
            while cut.endswith('}') and cut.count('}') > cut.count('{'):
                cut = cut[:-1].rstrip()
            repairs.append((cut, "a stray '}' at the end of the code was dropped"))
        if '\n' not in code.strip() and '\\n' in code:
            fixed = code.replace('\\n', '\n').replace('\\t', '\t').replace('\\"', '"')
            repairs.append((fixed, 'escaped newlines (\\n) in the code were read as line breaks'))
        for fixed, note in repairs:
            try:
                return compile(fixed, fn, 'exec', 0x400, True), note
            except SyntaxError:
                pass
        raise error

    def run_cell(code, n, limit):
        cap.reset(limit)
        sys.stdout = out
        sys.stderr = err
        fn = '<cell-%d>' % n
        cells[fn] = code
        value = None
        tb = None
        etype = None
        notes = []
        try:
            expr = None
            tree = None
            try:
                # Fast path: the cell is a single expression.
                expr = compile(code, fn, 'eval', 0, True)
            except SyntaxError:
                pass
            if expr is None:
                # Outside the except clause, so a real SyntaxError is not chained
                # to the one above.
                tree, note = _parse(code, fn)
                if note:
                    notes.append(note)
                renamed = _fix_name_case(tree)
                if renamed:
                    notes.append('read %s as %s (the names differ only in case)' % (
                        ', '.join(sorted(renamed)), ', '.join(renamed[k] for k in sorted(renamed))))
                body = tree.body
                if body and isinstance(body[-1], _ast.Return) and body[-1].value is not None:
                    # `return x` as the last line: the cell's value, like a last `x`.
                    body[-1] = _loc(_ast.Expr(body[-1].value), body[-1])
                    notes.append("a top-level 'return' was read as the cell's value")
                elif _returns_to_raise(body):
                    notes.append("a top-level 'return' ended the cell with its value")
                if body and isinstance(body[-1], _ast.Expr):
                    expr = compile(_ast.Expression(body.pop().value), fn, 'eval', 0, True)
                try:
                    exec(compile(tree, fn, 'exec', 0, True), ns)
                except _CellReturn as r:
                    expr = None
                    if r.value is not None:
                        ns['_'] = r.value
                        value = repr(r.value)
            if expr is not None:
                v = eval(expr, ns)
                if v is not None:
                    ns['_'] = v
                    value = repr(v)
            if tree is not None and value is None:
                cap.pull()
                if not cap.chunks and not cap.omitted:
                    uncalled = _uncalled_functions(tree)
                    callable_now = [u for u in uncalled if u[1] == 0 and not u[2]]
                    last = _assigned_name(tree.body[-1]) if tree.body else None
                    if len(callable_now) == 1:
                        name = callable_now[0][0]
                        v = ns[name]()
                        if v is not None:
                            # Its value is the cell's, as a last expression's would be
                            # (`def solution(): ... return x` is how the agent's code
                            # prompt asks for an answer): nothing to point out.
                            ns['_'] = v
                            value = repr(v)
                        else:
                            notes.append('%s() was defined but never called, so it was '
                                         'called' % name)
                    elif last is not None and last in ns and not uncalled:
                        # `total = a * b` as the last line: show what was computed.
                        shown = repr(ns[last])
                        if len(shown) > 300:
                            shown = shown[:300] + '...'
                        notes.append('the code printed nothing; its last line set %s = %s'
                                     % (last, shown))
                    elif uncalled:
                        names = ', '.join('%s()' % u[0] for u in uncalled)
                        notes.append('no output: the code defines %s but never calls it. '
                                     'Call it and print the result.' % names)
                    else:
                        notes.append('no output: the code printed nothing. '
                                     'Use print() to show the result.')
        except BaseException as e:
            etype = type(e).__name__
            try:
                tb = format_exception(e)
            except BaseException:
                tb = '%s (the traceback could not be formatted)\n' % etype
        cap.pull()
        sys.stdout = out
        sys.stderr = err
        fields = []
        for i, data in cap.chunks:
            fields.append((b'O' if i == 0 else b'E', bytes(data)))
        if cap.omitted:
            fields.append((b'D', str(cap.omitted).encode()))
        if value is not None:
            vb = value.encode('utf-8', 'backslashreplace')
            if len(vb) > limit:
                fields.append((b'v', str(len(vb)).encode()))
                vb = vb[:limit]
            fields.append((b'V', vb))
        if tb is not None:
            tbb = tb.encode('utf-8', 'backslashreplace')
            if len(tbb) > limit:
                head = limit // 4
                tail = limit - head
                tbb = (tbb[:head] + ('\n...[traceback truncated: %d bytes]...\n'
                                     % (len(tbb) - head - tail)).encode() + tbb[-tail:])
            fields.append((b'T', tbb))
            fields.append((b'N', etype.encode('utf-8', 'backslashreplace')))
        for note in notes:
            fields.append((b'H', note.encode('utf-8', 'backslashreplace')[:500]))
        return fields

    def reap():
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except OSError:
            pass

    pid = os.getpid()
    send([(b'R', b'ready')])
    n = 0
    while True:
        head = read_exact(4)
        if head is None:
            break
        body = read_exact(int.from_bytes(head, 'big'))
        if body is None or body[:1] != b'R':
            break
        req_id = body[1:5]
        limit = int.from_bytes(body[5:9], 'big')
        code = body[9:].decode('utf-8', 'surrogateescape')
        body = None
        n += 1
        try:
            fields = run_cell(code, n, limit)
        except MemoryError:
            cap.chunks = []
            fields = [(b'T', b'MemoryError: out of memory while running the cell\n'),
                      (b'N', b'MemoryError')]
        if os.getpid() != pid:
            # A child forked by the cell came back here: it must not answer or
            # read requests.
            os._exit(0)
        fields.insert(0, (b'I', req_id))
        send(fields)
        fields = None
        reap()
    os._exit(0)


_jielong_main()
