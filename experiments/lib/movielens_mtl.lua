-- movielens_mtl.lua: the two-task MovieLens data of the COMET protocol (papers.md §4.3) from the
-- ratings gm.data.movielens reads: each sampled rating (user, movie, r) is a watched example
-- (watch = 1, rating = r) and gets one unwatched example of the same user (a movie that user never
-- rated, uniform; watch = 0, rating masked), as the COMET repository's multitask CSV pairs them;
-- split 90/10 train/test stratified on watch, then 12.5% of train as validation.
local gm = require 'gmoe'

local M = {}

-- A split from parallel Lua arrays: x i32 [n, 2] (user, movie), watch f32 [n], rating f32 [n].
local function split(rows, idx, lo, hi)
  local x, w, r = {}, {}, {}
  for i = lo, hi do
    local row = rows[idx[i]]
    x[#x + 1] = {row[1], row[2]}
    w[#w + 1] = row[3]
    r[#r + 1] = row[4]
  end
  local xt = gm.tensor(x, {dtype = 'i32'})
  return {x = xt, watch = gm.tensor(w), rating = gm.tensor(r), user = xt:select(1, 0):contiguous(), n = #w}
end

-- Fisher-Yates order of 1..n from uniform draws of gen.
local function shuffled(n, gen)
  local u = gm.rand({math.max(n, 1)}, {dtype = 'f64', generator = gen}):totable()
  local p = {}
  for i = 1, n do p[i] = i end
  for i = n, 2, -1 do
    local j = math.floor(u[i] * i) + 1
    p[i], p[j] = p[j], p[i]
  end
  return p
end

--- M.build(ratings, {n = rated examples (all when nil), generator}) -> {train, val, test, n_users, n_movies}
function M.build(ml, o)
  local gen = o.generator
  local users, movies, ratings = ml.user:totable(), ml.movie:totable(), ml.rating:totable()
  local rated = {}
  for i = 1, ml.n do rated[users[i] * ml.n_movies + movies[i]] = true end
  if ml.n_movies < 2 then error('movielens protocol: needs at least 2 movies, got ' .. ml.n_movies, 2) end
  local order = shuffled(ml.n, gen)
  local n = math.min(o.n or ml.n, ml.n)
  local draws = gm.rand({n, 64}, {dtype = 'f64', generator = gen}):totable()
  local pos, neg = {}, {}
  for s = 1, n do
    local i = order[s]
    local u = users[i]
    pos[s] = {u, movies[i], 1, ratings[i]}
    local m
    for _, d in ipairs(draws[s]) do -- rejection sampling of a movie u never rated
      local c = math.floor(d * ml.n_movies)
      if not rated[u * ml.n_movies + c] then m = c break end
    end
    neg[s] = {u, m or (movies[i] + 1) % ml.n_movies, 0, 0}
  end
  -- stratified: the same cut points in the positives and the negatives
  local n_test = n - math.floor(0.9 * n + 0.5)
  local n_val = math.floor(0.125 * (n - n_test) + 0.5)
  local rows, parts = {}, {train = {}, val = {}, test = {}}
  for _, list in ipairs {pos, neg} do
    local p = shuffled(#list, gen)
    for j, i in ipairs(p) do
      rows[#rows + 1] = list[i]
      local part = j <= n_test and 'test' or j <= n_test + n_val and 'val' or 'train'
      local t = parts[part]
      t[#t + 1] = #rows
    end
  end
  local out = {n_users = ml.n_users, n_movies = ml.n_movies}
  for name, idx in pairs(parts) do
    local p = shuffled(#idx, gen)
    local mixed = {}
    for j, i in ipairs(p) do mixed[j] = idx[i] end
    out[name] = split(rows, mixed, 1, #mixed)
  end
  return out
end

--- ROC AUC of scores s (Lua array) for binary labels y (Lua array of 0/1): the Mann-Whitney
-- statistic with average ranks for ties; NaN when one class is absent.
function M.auc(s, y)
  local n = #s
  local idx = {}
  for i = 1, n do idx[i] = i end
  table.sort(idx, function(a, b) return s[a] < s[b] end)
  local rank_pos, npos = 0, 0
  local i = 1
  while i <= n do
    local j = i
    while j < n and s[idx[j + 1]] == s[idx[i]] do j = j + 1 end
    local r = (i + j) / 2
    for q = i, j do
      if y[idx[q]] == 1 then rank_pos = rank_pos + r; npos = npos + 1 end
    end
    i = j + 1
  end
  local nneg = n - npos
  if npos == 0 or nneg == 0 then return 0 / 0 end
  return (rank_pos - npos * (npos + 1) / 2) / (npos * nneg)
end

return M
