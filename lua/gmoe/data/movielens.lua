-- gmoe.data.movielens: gm.data.movielens(dir), a reader for the MovieLens rating files a user
-- already has: ml-100k (u.data), ml-1m / ml-10m (ratings.dat) and ml-latest(-small) / ml-20m /
-- ml-25m (ratings.csv), detected by which file the folder holds. Nothing downloads. Users and
-- movies are renumbered densely (0-based, in order of first appearance) for embedding tables;
-- every malformed line is an error naming the file and its line number.
local gm = require 'gmoe'
local doc = require 'gmoe.doc'

local M = {}
local F = 'gm.data.movielens'

-- The known layouts, in the order they are looked for.
local FORMATS = {
  {file = 'u.data', name = 'ml-100k', sep = '\t', fields = 'user id, item id, rating, timestamp (tab-separated)'},
  {file = 'ratings.dat', name = 'ml-1m', sep = '::', fields = 'UserID::MovieID::Rating::Timestamp'},
  {file = 'ratings.csv', name = 'ml-latest', sep = ',', header = 'userId,movieId,rating,timestamp',
   fields = 'userId,movieId,rating,timestamp (comma-separated, one header line)'},
}

local function where()
  local names = {}
  for _, f in ipairs(FORMATS) do names[#names + 1] = ('%s (%s)'):format(f.file, f.name) end
  return table.concat(names, ', ')
end

local function split(line, sep)
  local out, i = {}, 1
  while true do
    local j = line:find(sep, i, true)
    if not j then out[#out + 1] = line:sub(i) break end
    out[#out + 1] = line:sub(i, j - 1)
    i = j + #sep
  end
  return out
end

-- One chunk of parsed columns into tensors appended to cols.
local function flush(cols, u, m, r, t)
  if #u == 0 then return end
  cols.user[#cols.user + 1] = gm.tensor(u, {dtype = 'i32'})
  cols.movie[#cols.movie + 1] = gm.tensor(m, {dtype = 'i32'})
  cols.rating[#cols.rating + 1] = gm.tensor(r)
  cols.timestamp[#cols.timestamp + 1] = gm.tensor(t, {dtype = 'f64'})
end

--- gm.data.movielens(dir) -> {user, movie, rating, timestamp, n, n_users, n_movies, user_ids, movie_ids, format, file}
function M.movielens(dir, opts)
  if type(dir) ~= 'string' then error(F .. '(dir): dir must be a string, got ' .. type(dir), 2) end
  if opts ~= nil then
    if type(opts) ~= 'table' then error(F .. ': opts must be a table', 2) end
    for k in pairs(opts) do
      if k ~= 'max_ratings' then error(F .. ': unknown option ' .. tostring(k) .. ' (known: max_ratings)', 2) end
    end
  end
  local max = opts and opts.max_ratings
  if max ~= nil and (math.type(max) ~= 'integer' or max < 1) then
    error(F .. ': max_ratings must be an integer >= 1, got ' .. tostring(max), 2)
  end
  local fmt, path, fh
  local base = dir:gsub('/+$', '')
  for _, f in ipairs(FORMATS) do
    path = base .. '/' .. f.file
    local kind = gm._C.file_kind(path) -- probe before opening: opening a FIFO would block
    if kind and kind ~= 'file' then
      error(('%s: cannot read %s: it is a %s, not a regular file'):format(F, path, kind), 2)
    end
    fh = kind and io.open(path, 'rb')
    if fh then fmt = f break end
  end
  if not fmt then
    error(('%s: no MovieLens ratings file in %s (looked for %s). MovieLens is published by GroupLens ' ..
           'at https://grouplens.org/datasets/movielens/ : download and unpack a release yourself ' ..
           '(gmoe downloads nothing) and pass its folder'):format(F, dir, where()), 2)
  end
  local umap, mmap, uids, mids = {}, {}, {}, {}
  local cols = {user = {}, movie = {}, rating = {}, timestamp = {}}
  local u, m, r, t = {}, {}, {}, {}
  local lineno, n = 0, 0
  local function bad(line, why)
    fh:close()
    local shown = #line > 80 and line:sub(1, 77) .. '...' or line
    error(('%s: %s line %d: %s (a %s line is %s), got "%s"'):format(F, path, lineno, why, fmt.name, fmt.fields, shown), 3)
  end
  for line in fh:lines() do
    lineno = lineno + 1
    line = line:gsub('\r$', '')
    if fmt.header and lineno == 1 then
      if line:gsub('^\239\187\191', '') ~= fmt.header then bad(line, 'expected the header "' .. fmt.header .. '"') end
    elseif line ~= '' then
      local f = split(line, fmt.sep)
      if #f ~= 4 then bad(line, ('expected 4 fields, found %d'):format(#f)) end
      local uid, mid = math.tointeger(tonumber(f[1])), math.tointeger(tonumber(f[2]))
      local rating, ts = tonumber(f[3]), tonumber(f[4])
      if not uid or not mid then bad(line, 'user and movie ids must be integers') end
      if not rating or not (rating > 0 and rating <= 5) then bad(line, 'the rating must be a number in (0, 5]') end
      if not ts then bad(line, 'the timestamp must be a number') end
      local ui = umap[uid]
      if not ui then ui = #uids; uids[ui + 1] = uid; umap[uid] = ui end
      local mi = mmap[mid]
      if not mi then mi = #mids; mids[mi + 1] = mid; mmap[mid] = mi end
      n = n + 1
      local j = #u + 1
      u[j], m[j], r[j], t[j] = ui, mi, rating, ts
      if j == 65536 then
        flush(cols, u, m, r, t)
        u, m, r, t = {}, {}, {}, {}
      end
      if max and n >= max then break end
    end
  end
  fh:close()
  flush(cols, u, m, r, t)
  if n == 0 then error(('%s: %s holds no ratings'):format(F, path), 2) end
  local function cat(list) return #list == 1 and list[1] or gm.cat(list, 0) end
  return {user = cat(cols.user), movie = cat(cols.movie), rating = cat(cols.rating), timestamp = cat(cols.timestamp),
          n = n, n_users = #uids, n_movies = #mids, user_ids = gm.tensor(uids, {dtype = 'i32'}),
          movie_ids = gm.tensor(mids, {dtype = 'i32'}), format = fmt.name, file = path}
end

doc.add('gm.data.movielens', 'gm.data.movielens(dir, {max_ratings=nil}) -> ratings',
  'Reads the MovieLens ratings in folder dir, whichever release it is: u.data (ml-100k: user, item, ' ..
  'rating, timestamp, tab-separated), ratings.dat (ml-1m, ml-10m: UserID::MovieID::Rating::Timestamp) ' ..
  'or ratings.csv (ml-latest, ml-latest-small, ml-20m, ml-25m: a userId,movieId,rating,timestamp header, ' ..
  'half-star ratings), looked for in that order. Returns {user i32 [n], movie i32 [n] (dense 0-based ' ..
  'indices in order of first appearance, for embedding tables), rating f32 [n], timestamp f64 [n], n, ' ..
  'n_users, n_movies, user_ids i32 [n_users] and movie_ids i32 [n_movies] (the file\'s ids of each dense ' ..
  'index), format ("ml-100k", "ml-1m" or "ml-latest"), file}. max_ratings stops after that many. A ' ..
  'malformed line (field count, non-integer ids, a rating outside (0, 5], a bad header) is an error ' ..
  'naming the file and line number; a folder without any of the files is an error that lists them and ' ..
  'says where MovieLens is published (https://grouplens.org/datasets/movielens/). Nothing downloads.',
  {paper = 'Harper & Konstan, "The MovieLens Datasets: History and Context", ACM TiiS 2015'})

return M
