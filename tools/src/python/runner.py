# Jielong's Python worker. Embedded in the Rust binary and started as
#   python -I -S -B -c <this file> <extra sys.path entries...>
# Protocol (all integers big-endian):
#   fd 3 (requests):  u32 length, then  b'R' u32 id u32 output_limit <utf-8 code>
#                                   or  b'X' (exit)
#   fd 4 (responses): u32 length, then fields: u8 tag, u32 length, bytes
#     I id | O stdout bytes | E stderr bytes | D omitted output bytes (ascii int)
#     V value repr | v full value length | T traceback | N exception type name
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

    def run_cell(code, n, limit):
        cap.reset(limit)
        sys.stdout = out
        sys.stderr = err
        fn = '<cell-%d>' % n
        cells[fn] = code
        value = None
        tb = None
        etype = None
        try:
            expr = None
            try:
                # Fast path: the cell is a single expression.
                expr = compile(code, fn, 'eval', 0, True)
            except SyntaxError:
                pass
            if expr is None:
                # Outside the except clause, so a real SyntaxError is not chained
                # to the one above.
                tree = compile(code, fn, 'exec', 0x400, True)  # PyCF_ONLY_AST
                body = tree.body
                if body and type(body[-1]).__name__ == 'Expr':
                    import _ast
                    expr = compile(_ast.Expression(body.pop().value), fn, 'eval', 0, True)
                exec(compile(tree, fn, 'exec', 0, True), ns)
            if expr is not None:
                v = eval(expr, ns)
                if v is not None:
                    ns['_'] = v
                    value = repr(v)
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
