-- t_kernel.lua: gmoe's Jupyter kernel (lua/jupyter*.c, lua/gmoe/kernel.lua) tested with
-- Jupyter's own client: tests/jupyter/t_kernel.py runs under Debian's /usr/bin/python3 (which
-- has jupyter_client, nbclient and nbconvert; the pyenv python3 on PATH does not) and prints
-- the TAP itself.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'

local py = '/usr/bin/python3'
if not os.execute(py .. ' -c "import jupyter_client, nbclient, nbconvert" 2>/dev/null') then
  tap.skip_all(py .. ' lacks jupyter_client/nbclient/nbconvert (make deps installs them)')
end
io.stdout:flush()
local ok = os.execute(('timeout 600 %s tests/jupyter/t_kernel.py %s'):format(py, tap.q(tap.gmoe_path())))
os.exit(ok and 0 or 1)
