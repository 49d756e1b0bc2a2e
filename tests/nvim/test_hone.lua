-- Headless Neovim driving Hone through tests/nvim/hone.lua (the config docs/server.md shows users).
--   HONE_CMD='["python","-m","lsp_server","--model","DIR"]' HONE_ROOT=/tmp/x HONE_OUT=/tmp/x/out.json \
--   nvim --headless --clean -u tests/nvim/test_hone.lua
local here = debug.getinfo(1, 'S').source:sub(2):match('(.*/)')
local hone = dofile(here .. 'hone.lua')
local root = assert(os.getenv('HONE_ROOT'))
local out = {}
local function finish()
  vim.fn.writefile({ vim.json.encode(out) }, assert(os.getenv('HONE_OUT')))
  vim.cmd('qa!')
end

local ok, err = pcall(function()
  local file = root .. '/sample.py'
  vim.fn.writefile({ 'import os', '', 'def size(path):', '    return ', '', 'total = ???', '' }, file)
  hone.setup({
    cmd = vim.json.decode(assert(os.getenv('HONE_CMD'))),
    settings = { maxTokens = 6, debounceMs = 0, deadlineMs = 0, grounding = false }, -- the tiny model writes gibberish names
  })
  vim.cmd('filetype plugin indent on') -- an -u script runs before Neovim turns detection on
  vim.cmd.edit(file)
  local buf = vim.api.nvim_get_current_buf()
  out.initialized = vim.wait(60000, function()
    local c = vim.lsp.get_clients({ name = 'hone', bufnr = buf })[1]
    return c ~= nil and c.initialized
  end, 50)
  out.ready = vim.wait(60000, function() return hone.status.state == 'ready' end, 50)
  out.status = hone.status
  local client = vim.lsp.get_clients({ name = 'hone', bufnr = buf })[1]
  out.inline_provider = client.server_capabilities.inlineCompletionProvider ~= nil

  -- placing the cursor (CursorMoved) tells the server, which computes the completion there ahead
  vim.api.nvim_win_set_cursor(0, { 3, 0 })
  vim.api.nvim_exec_autocmds('CursorMoved', { buffer = buf }) -- (a headless script's moves do not fire it)
  out.prefetched = vim.wait(30000, function()
    for _, r in pairs(vim.lsp.buf_request_sync(buf, 'hone/stats', {}, 5000) or {}) do
      if r.result and (r.result.prefetched or 0) > 0 then
        return true
      end
    end
    return false
  end, 100)

  local params = { textDocument = { uri = vim.uri_from_bufnr(buf) }, position = { line = 3, character = 11 } }
  local res = vim.lsp.buf_request_sync(buf, 'textDocument/completion', params, 30000)
  for _, r in pairs(res or {}) do
    out.completion = r.err and { err = r.err.message } or r.result.items
  end
  params.context = { triggerKind = 1 }
  res = vim.lsp.buf_request_sync(buf, 'textDocument/inlineCompletion', params, 30000)
  for _, r in pairs(res or {}) do
    out.inline = r.err and { err = r.err.message } or r.result.items
  end

  -- the ghost-text flow of hone.lua: suggest at the cursor, see the extmark, accept it
  vim.o.virtualedit = 'onemore' -- a headless script stays in normal mode: let the cursor sit at the line end
  vim.api.nvim_win_set_cursor(0, { 4, 11 })
  local answered, item = false, nil
  hone.suggest(function(it) answered, item = true, it end)
  vim.wait(30000, function() return answered end, 20)
  out.suggested = item ~= nil
  out.ghost = #vim.api.nvim_buf_get_extmarks(buf, vim.api.nvim_get_namespaces()['hone'], 0, -1, {}) > 0
  out.accepted = hone.accept()
  out.line_after_accept = vim.api.nvim_buf_get_lines(buf, 3, 4, false)[1]

  -- :HoneFillHoles: the server answers with workspace/applyEdit, which Neovim applies
  vim.cmd('HoneFillHoles')
  out.filled = vim.wait(30000, function()
    return not vim.api.nvim_buf_get_lines(buf, 5, 6, false)[1]:find('???', 1, true)
  end, 50)
  out.line_after_fill = vim.api.nvim_buf_get_lines(buf, 5, 6, false)[1]

  local before = vim.api.nvim_buf_get_changedtick(buf)
  vim.cmd('1HoneRewrite')
  out.rewritten = vim.wait(30000, function() return vim.api.nvim_buf_get_changedtick(buf) ~= before end, 50)
  vim.lsp.stop_client(client.id)
  out.stopped = vim.wait(10000, function() return vim.lsp.get_client_by_id(client.id) == nil end, 50)
end)
out.ok, out.err = ok, err and tostring(err) or nil
finish()
