#!/usr/bin/python3
"""t_kernel.py GMOE: gmoe's Jupyter kernel driven by Jupyter's own client
(jupyter_client.KernelManager and nbconvert/nbclient), printing TAP for prove (through
tests/lua/t_kernel.lua). Covers the kernelspec, execute (results, errors, state kept, streams in
order and as produced, figures, tables as HTML, magics), complete, inspect, is_complete,
history, io.read through input_request, interrupt (signal and control message), heartbeat,
forged/unsigned/replayed messages, restart, shutdown with no process left, and
`jupyter nbconvert --execute` on experiments/tour.ipynb and on a notebook the REPL exported."""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from queue import Empty

GMOE = os.path.realpath(sys.argv[1])
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TMP = tempfile.mkdtemp(prefix='gmoe-kernel-')
HAS_GNUPLOT = shutil.which('gnuplot') is not None
for var, sub in [('JUPYTER_PATH', 'share/jupyter'), ('JUPYTER_RUNTIME_DIR', 'runtime'),
                 ('JUPYTER_DATA_DIR', 'data'), ('JUPYTER_CONFIG_DIR', 'config')]:
    os.environ[var] = os.path.join(TMP, sub)
os.environ['GMOE_HISTORY'] = '/dev/null'
os.environ.pop('GMOE_PLOT_TERM', None)

count = failed = 0


def ok(cond, name, diag=None):
    global count, failed
    count += 1
    print(('ok %d - %s' if cond else 'not ok %d - %s') % (count, name.replace('#', '\\#')))
    if not cond:
        failed += 1
        for line in str(diag if diag is not None else '').splitlines():
            print('# ' + line)
    sys.stdout.flush()
    return cond


def skip(name, why):
    global count
    count += 1
    print('ok %d - %s # SKIP %s' % (count, name, why))


def is_(got, want, name):
    return ok(got == want, name, 'got:  %r\nwant: %r' % (got, want))


# ---- the kernelspec -------------------------------------------------------------------------
r = subprocess.run([GMOE, 'kernel', 'install', '--prefix', TMP], capture_output=True, text=True)
spec_path = os.path.join(TMP, 'share/jupyter/kernels/gmoe/kernel.json')
ok(r.returncode == 0 and os.path.exists(spec_path), 'gmoe kernel install --prefix writes kernel.json',
   r.stderr)
spec = json.load(open(spec_path))
is_((spec['argv'], spec['interrupt_mode'], spec['language']),
    ([GMOE, 'kernel', '-f', '{connection_file}'], 'signal', 'lua'),
    'kernel.json: absolute argv, signal interrupts, language lua')
user_env = dict(os.environ, JUPYTER_DATA_DIR=os.path.join(TMP, 'user'))
user_spec = os.path.join(TMP, 'user/kernels/gmoe/kernel.json')
r = subprocess.run([GMOE, 'kernel', 'install', '--user'], env=user_env, capture_output=True, text=True)
ok(r.returncode == 0 and os.path.exists(user_spec), 'install --user: under $JUPYTER_DATA_DIR', r.stderr)
r = subprocess.run([GMOE, 'kernel', 'uninstall', '--user'], env=user_env, capture_output=True, text=True)
ok(r.returncode == 0 and not os.path.exists(user_spec), 'uninstall --user removes it', r.stderr)
r = subprocess.run([GMOE, 'kernel', '-f', os.path.join(TMP, 'missing.json')], capture_output=True, text=True)
ok(r.returncode == 1 and 'missing.json: No such file' in r.stderr, 'a missing connection file: exit 1, named',
   r.stderr)
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402

ok('gmoe' in KernelSpecManager().find_kernel_specs(), "Jupyter's KernelSpecManager finds it")

from jupyter_client import KernelManager  # noqa: E402
from jupyter_client.session import Session  # noqa: E402

log_path = os.path.join(TMP, 'kernel.log')
km = KernelManager(kernel_name='gmoe')
km.start_kernel(stderr=open(log_path, 'w'))
kc = km.client()
kc.start_channels()
kc.wait_for_ready(timeout=60)


def run(code, timeout=60, answers=None, after_send=None, **kw):
    """Executes code; returns (reply content, [iopub messages with arrival time 't'])."""
    msg_id = kc.execute(code, **kw)
    if after_send:
        after_send()
    outs, reply, idle = [], None, False
    deadline = time.time() + timeout
    while not idle and time.time() < deadline:
        if answers is not None:
            try:
                req = kc.get_stdin_msg(timeout=0.01)
                outs.append({'msg_type': 'input_request', 'content': req['content'], 't': time.time()})
                kc.input(answers.pop(0))
            except Empty:
                pass
        try:
            m = kc.get_iopub_msg(timeout=0.05)
        except Empty:
            continue
        if m['parent_header'].get('msg_id') != msg_id:
            continue
        m['t'] = time.time()
        if m['msg_type'] == 'status' and m['content']['execution_state'] == 'idle':
            idle = True
        elif m['msg_type'] != 'status':
            outs.append(m)
    while time.time() < deadline:
        m = kc.get_shell_msg(timeout=max(0.1, deadline - time.time()))
        if m['parent_header'].get('msg_id') == msg_id:
            reply = m['content']
            reply['t'] = time.time()
            break
    return reply, outs


def of(outs, kind):
    return [m['content'] for m in outs if m['msg_type'] == kind]


def text(outs, name='stdout'):
    return ''.join(c['text'] for c in of(outs, 'stream') if c['name'] == name)


def result(outs):
    rs = of(outs, 'execute_result')
    return rs[0]['data'].get('text/plain') if rs else None


def request(send, reply_type):
    """send() issues a shell request; returns the content of its reply."""
    msg_id = send()
    while True:
        m = kc.get_shell_msg(timeout=30)
        if m['parent_header'].get('msg_id') == msg_id:
            is_(m['msg_type'], reply_type, 'reply type ' + reply_type)
            return m['content']


ci = km.get_connection_info()
ports = {ci[k] for k in ('shell_port', 'iopub_port', 'stdin_port', 'control_port', 'hb_port')}
listening = []
for table in ('/proc/net/tcp', '/proc/net/tcp6'):
    for line in open(table).read().splitlines()[1:]:
        f = line.split()
        addr, port = f[1].rsplit(':', 1)
        if f[3] == '0A' and int(port, 16) in ports:  # 0A: LISTEN
            listening.append((addr, int(port, 16)))
is_(sorted(listening), sorted(('0100007F', p) for p in ports),
    'it listens on the five ports of the connection file, on 127.0.0.1 only')

# ---- kernel_info, execute -------------------------------------------------------------------
info = request(kc.kernel_info, 'kernel_info_reply')
is_((info['protocol_version'], info['implementation'], info['language_info']['name']),
    ('5.3', 'gmoe', 'lua'), 'kernel_info: protocol 5.3, gmoe, lua')

rep, outs = run('x = 20')
is_((rep['status'], rep['execution_count']), ('ok', 1), 'a statement: ok, execution_count 1')
is_([c['code'] for c in of(outs, 'execute_input')], ['x = 20'], 'execute_input carries the code')
is_(of(outs, 'execute_result'), [], 'a statement has no result')
rep, outs = run('x + 1')
is_((result(outs), of(outs, 'execute_result')[0]['execution_count']), ('21', 2),
    'an expression: execute_result text/plain "21", execution_count 2')
rep, outs = run('error("boom")')
err = of(outs, 'error')
ok(rep['status'] == 'error' and rep['ename'] == 'Error' and 'boom' in rep['evalue'],
   'an error: reply status error, ename, evalue', rep)
ok(err and 'In[3]:1: boom' in err[0]['traceback'][0] and 'stack traceback:' in err[0]['traceback'],
   'an error message on iopub with the traceback', err)
rep, outs = run('x')
is_(result(outs), '20', 'variables survive the error')
rep, outs = run('local n = 3\nt = {}\nfor i = 1, n do t[i] = {step = i, loss = 1 / i} end\nt')
is_(result(outs), '{{loss = 1.0, step = 1}, {loss = 0.5, step = 2}, {loss = 0.33333333333333, step = 3}}',
    "a cell's last line shows its value, as the REPL prints it")
html = of(outs, 'execute_result')[0]['data'].get('text/html', '')
ok(html.startswith('<table>') and '<th>loss</th>' in html and '<td>0.5</td>' in html,
   'a list of records also as an HTML table', html)
rep, outs = run('y = gm.randn{2, 3}\ny')
ok(result(outs).startswith('tensor f32[2, 3] cpu  min') and 'text/html' not in
   of(outs, 'execute_result')[0]['data'], 'a tensor as the REPL shows it, text only', result(outs))

# the failing cell first waits (a busy loop of 0.5 s) so the second request is queued behind it
# however slowly this machine delivers them
ids = [kc.execute('local t0 = gm.clock() while gm.clock() - t0 < 0.5 do end error("stop")'),
       kc.execute('ran_after = true')]
replies = {}
while len(replies) < 2:
    m = kc.get_shell_msg(timeout=30)
    replies[m['parent_header'].get('msg_id')] = m['content']['status']
is_([replies[i] for i in ids], ['error', 'aborted'], 'a failed cell aborts the cells queued behind it')
rep, outs = run('ran_after')
is_(result(outs), 'nil', 'the aborted cell did not run')
n_before = rep['execution_count']
rep, outs = run('silent_v = 7\nprint("hidden")\nsilent_v', silent=True)
is_((rep['status'], rep['execution_count'], [m['msg_type'] for m in outs]), ('ok', n_before, []),
    'silent: no output, no execute_input, the count unchanged')
rep, outs = run('silent_v')
is_(result(outs), '7', 'silent code still ran')

# ---- streams --------------------------------------------------------------------------------
rep, outs = run('for i = 1, 3 do print("line " .. i) end\nio.stderr:write("err\\n")\n'
                'os.execute("echo from a child")\nio.write("no newline")')
is_(text(outs), 'line 1\nline 2\nline 3\nfrom a child\nno newline', 'stdout in order, child processes too')
is_(text(outs, 'stderr'), 'err\n', 'stderr as its own stream')
rep, outs = run('print("first")\nlocal t0 = gm.clock()\nwhile gm.clock() - t0 < 1.5 do end\nprint("second")')
firsts = [m['t'] for m in outs if m['msg_type'] == 'stream' and 'first' in m['content']['text']]
ok(firsts and rep['t'] - firsts[0] > 1.0, 'print reaches the client while the cell still runs',
   'first at %s, reply at %s' % (firsts, rep['t']))

if HAS_GNUPLOT:
    rep, outs = run('print("before")\nfig = gm.plot{y = {1, 3, 2}, title = "t"}\nprint("after")\nfig')
    kinds = [(m['msg_type'], m['content'].get('text')) for m in outs]
    is_(kinds, [('execute_input', None), ('stream', 'before\n'), ('display_data', None),
                ('stream', 'after\n'), ('execute_result', None)],
        'output, figure and result in the order they were made')
    d = of(outs, 'display_data')[0]['data']
    ok(base64.b64decode(d['image/png'])[:8] == b'\x89PNG\r\n\x1a\n' and '<svg' in d['image/svg+xml'],
       'gm.plot: a display_data with image/png and image/svg+xml', list(d))
    rep, outs = run('%plot')
    is_(len(of(outs, 'display_data')), 1, '%plot draws the last figure again')
else:
    skip('figures', 'gnuplot is not installed')

# ---- magics, help ---------------------------------------------------------------------------
rep, outs = run('%who')
who = ' '.join(text(outs).split())
ok('x integer = 20' in who and 'y tensor f32[2, 3] cpu' in who, '%who lists variables', text(outs))
rep, outs = run('%seed 7\nz = gm.randn{2}\n%who\nz:sum():item() == z:sum():item()')
ok(text(outs).startswith('seed 7\n') and 'z tensor f32[2] cpu' in ' '.join(text(outs).split())
   and result(outs) == 'true',
   'magic lines between Lua lines run in order', text(outs))
rep, outs = run('%timeit 1 + 1')
ok('per loop' in text(outs), '%timeit', text(outs))
rep, outs = run('?gm.randn')
ok(text(outs).startswith('gm.randn(shape, opts) -> tensor'), '?name prints the help', text(outs))
rep, outs = run('%nosuch')
ok(rep['status'] == 'error' and 'unknown magic' in rep['evalue'], 'an unknown magic is an error', rep)

# ---- complete, inspect, is_complete, history ------------------------------------------------
c = request(lambda: kc.complete('gm.ze', 5), 'complete_reply')
ok('gm.zeros(' in c['matches'] and (c['cursor_start'], c['cursor_end']) == (0, 5),
   'complete gm.ze: gm.zeros( over the whole word', c)
c = request(lambda: kc.complete('é = y:mat', 9), 'complete_reply')
ok('y:matmul(' in c['matches'] and c['cursor_start'] == 4, 'tensor methods; positions in characters', c)
os.makedirs(os.path.join(TMP, 'somedir'))
code = 'f = io.open("%s/som' % TMP
c = request(lambda: kc.complete(code, len(code)), 'complete_reply')
is_(c['matches'], [TMP + '/somedir/'], 'inside a string: file names')
i = request(lambda: kc.inspect('gm.randn', 8), 'inspect_reply')
ok(i['found'] and i['data']['text/plain'].startswith('gm.randn(shape, opts)'), 'inspect gm.randn', i)
i = request(lambda: kc.inspect('w = gm.zeros(', 13), 'inspect_reply')
ok(i['found'] and 'gm.zeros' in i['data']['text/plain'], 'inspect inside a call: the function', i)
i = request(lambda: kc.inspect('nosuchname', 3), 'inspect_reply')
ok(not i['found'], 'inspect an unknown name: not found', i)
for code, want in [('for i = 1, 3 do', 'incomplete'), ('function f()\n  return 1', 'incomplete'),
                   ('x = 1', 'complete'), ('x = = 1', 'invalid'), ('%time x', 'complete'),
                   ('s = [[\n%who', 'incomplete'), ('t = {\n%who', 'invalid')]:
    rq = request(lambda: kc.is_complete(code), 'is_complete_reply')
    is_(rq['status'], want, 'is_complete %r' % code)
h = request(lambda: kc.history(hist_access_type='tail', n=2), 'history_reply')
is_([e[2] for e in h['history']], ['?gm.randn', '%nosuch'], 'history tail: the last cells')

# ---- input ----------------------------------------------------------------------------------
rep, outs = run('io.write("name? ")\nname = io.read()\nn = io.read("n")\nname, n', answers=['Ada', '42'],
                allow_stdin=True)
reqs = [m for m in outs if m['msg_type'] == 'input_request']
ok(len(reqs) == 2 and result(outs) == '"Ada"\t42', 'io.read asks the client (input_request)',
   (reqs, result(outs)))
rep, outs = run('io.read()', allow_stdin=False)
ok(rep['status'] == 'error' and 'allow_stdin' in rep['evalue'], 'io.read without stdin: a clear error',
   rep)

# ---- interrupt ------------------------------------------------------------------------------
beats = []
rep, outs = run('k = 5\nwhile true do k = k end', timeout=30,
                after_send=lambda: (time.sleep(1.0), beats.append(kc.hb_channel.is_beating()),
                                    beats.append(time.time()), km.interrupt_kernel()))
ok(beats and beats[0], 'the heartbeat answers while a cell runs')
ok(rep and rep['status'] == 'error' and rep['ename'] == 'Interrupted' and rep['t'] - beats[1] < 1.0,
   'interrupt (SIGINT) stops a running cell within 1 s',
   rep and (rep.get('ename'), rep['t'] - beats[1]))
rep, outs = run('x, k')
is_(result(outs), '20\t5', 'variables intact after the interrupt')
km.interrupt_kernel()
time.sleep(0.3)
rep, outs = run('x')
is_(result(outs), '20', 'an interrupt between cells does no harm')
sent = []
rep, outs = run('while true do end', timeout=30,
                after_send=lambda: (time.sleep(1.0), sent.append(time.time()),
                                    kc.control_channel.send(kc.session.msg('interrupt_request', {}))))
ok(rep and rep['ename'] == 'Interrupted' and rep['t'] - sent[0] < 1.0,
   'interrupt_request on the control channel does the same', rep)

# ---- security: forged, unsigned and replayed messages ---------------------------------------
import zmq  # noqa: E402

ci = km.get_connection_info()
sock = zmq.Context.instance().socket(zmq.DEALER)
sock.connect('%s://%s:%d' % (ci['transport'], ci['ip'], ci['shell_port']))
good = Session(key=ci['key'], signature_scheme='hmac-sha256')
forged = Session(key=b'not-the-key', signature_scheme='hmac-sha256')
unsigned = Session(key=b'')
ex = {'code': 'marks = (marks or "") .. "%s"', 'silent': False}
forged.send(sock, 'execute_request', dict(ex, code=ex['code'] % 'F'))
unsigned.send(sock, 'execute_request', dict(ex, code=ex['code'] % 'U'))
msg = good.msg('execute_request', dict(ex, code=ex['code'] % 'G'))
frames = good.serialize(msg)
sock.send_multipart(frames)
sock.send_multipart(frames)  # a replay: the same signature again
replies = []
while sock.poll(2000):
    replies.append(good.deserialize(sock.recv_multipart()[1:]))
is_([m['msg_type'] for m in replies], ['execute_reply'], 'only the well-signed message is answered')
rep, outs = run('marks')
is_(result(outs), '"G"', 'forged, unsigned and replayed messages never ran')
log = open(log_path).read()
ok('bad signature' in log and 'without a signature' in log and 'replayed' in log,
   'each dropped message is logged', log)
sock.close(0)

# ---- restart, shutdown ----------------------------------------------------------------------
old = km.provisioner.process
km.restart_kernel(now=False)
kc.wait_for_ready(timeout=60)
rep, outs = run('x')
ok(old.poll() == 0 and km.provisioner.process.pid != old.pid and result(outs) == 'nil',
   'restart: the old kernel exits by itself, the new one starts clean', (old.poll(), result(outs)))
proc = km.provisioner.process
pgid = proc.pid
kc.stop_channels()
km.shutdown_kernel(now=False)
del kc, km  # now, not at interpreter exit (their finalizers log)
left = []
for p in os.listdir('/proc'):
    if p.isdigit():
        try:
            stat = open('/proc/%s/stat' % p).read()
        except OSError:
            continue
        if int(stat.rsplit(')', 1)[1].split()[2]) == pgid:
            left.append(p)
ok(proc.poll() == 0 and not left, 'shutdown: exit status 0, no process left in its group',
   (proc.poll(), left))

# ---- nbconvert: the example notebook and a notebook the REPL exported -----------------------
def outputs(nb_path):
    """Per code cell: its text (stream text + result text/plain + newline, as %export writes
    it), and its figures (PNG, base64)."""
    nb = json.load(open(nb_path))
    cells = []
    for c in nb['cells']:
        if c['cell_type'] != 'code':
            continue
        s, figs = '', []
        for o in c['outputs']:
            if o['output_type'] == 'stream' and o['name'] == 'stdout':
                s += ''.join(o['text'])
            elif o['output_type'] == 'execute_result':
                s += ''.join(o['data']['text/plain']) + '\n'
            elif o['output_type'] == 'display_data' and 'image/png' in o['data']:
                figs.append(''.join(o['data']['image/png']))
            elif o['output_type'] == 'error':
                s += 'error: ' + o['evalue'] + '\n'
        cells.append((s, figs))
    return nb, cells


def nbconvert(src, dst):
    r = subprocess.run(['jupyter', 'nbconvert', '--to', 'notebook', '--execute',
                        '--ExecutePreprocessor.timeout=120', '--output', dst, src],
                       capture_output=True, text=True, cwd=TMP)
    ok(r.returncode == 0, 'jupyter nbconvert --execute ' + os.path.basename(src), r.stderr[-3000:])


tour = os.path.join(TMP, 'tour.ipynb')
shutil.copy(os.path.join(ROOT, 'experiments', 'tour.ipynb'), tour)
nbconvert(tour, os.path.join(TMP, 'tour.out.ipynb'))
_, want = outputs(tour)
_, got = outputs(os.path.join(TMP, 'tour.out.ipynb'))
# Figures by number only: their pixels depend on the fonts of the machine that drew them.
is_([(t, len(f)) for t, f in got], [(t, len(f)) for t, f in want],
    'experiments/tour.ipynb: the outputs it was committed with')

cells = ['gm.manual_seed(1)', 'x = gm.randn{3}', 'x', 'for i = 1, 2 do print("line", i) end',
         't = {a = 1, b = "two"}', 't', 'function f(a)\n  return a * 2\nend', 'f(21)']
if HAS_GNUPLOT:
    cells += ['s = gm.linspace(0, 1, 5)', 'gm.plot{y = s}']
r = subprocess.run([GMOE], input='\n'.join(cells) + '\n%export ' + TMP + '/session.ipynb\n',
                   capture_output=True, text=True, cwd=TMP)
ok(r.returncode == 0 and 'wrote' in r.stdout, 'the REPL exports a notebook', r.stdout + r.stderr)
exported, want = outputs(os.path.join(TMP, 'session.ipynb'))
is_(exported['metadata']['kernelspec']['name'], 'gmoe', "the exported notebook names gmoe's kernel")
nbconvert(os.path.join(TMP, 'session.ipynb'), os.path.join(TMP, 'session.out.ipynb'))
_, got = outputs(os.path.join(TMP, 'session.out.ipynb'))
is_(got, want, 'run in Jupyter, the exported notebook gives the outputs the REPL gave (figures to the byte)')

shutil.rmtree(TMP, ignore_errors=True)
print('1..%d' % count)
sys.exit(1 if failed else 0)
