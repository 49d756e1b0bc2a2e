-- Hone for Neovim 0.11+: starts `hone-lsp` for Python buffers and shows its inline completions as
-- ghost text. Copy this file to ~/.config/nvim/lua/hone.lua and put in your init.lua:
--
--   require('hone').setup({ settings = { maxTokens = 48 } })
--
-- Keys (insert mode): <M-]> ask for a suggestion, <Tab> accept it (else a normal Tab), <C-]> dismiss.
-- Commands: :HoneFillHoles (every ??? in the buffer), :'<,'>HoneRewrite, :HoneStatus.
-- The completion menu (<C-x><C-o>, or any completion plugin) also offers Hone's suggestion.
-- Neovim 0.12+ also gets native ghost text: vim.lsp.inline_completion.enable() is called for you.
local M = {}

M.defaults = {
  cmd = { 'hone-lsp' }, -- or { '/path/to/venv/bin/python', '-m', 'lsp_server', '--model', '/path/to/model' }
  filetypes = { 'python' },
  root_markers = { 'pyproject.toml', 'setup.py', '.git' },
  -- sent as initializationOptions and as workspace settings; see the settings table in the README
  settings = {},
  auto = true, -- ask for a suggestion after each pause in typing (the server debounces too)
  keymaps = { suggest = '<M-]>', accept = '<Tab>', dismiss = '<C-]>' },
}

M.status = { state = 'loading', message = '' } -- the latest hone/status notification
M.suggestion = nil -- { bufnr, item, client_id } while ghost text is shown

local ns = vim.api.nvim_create_namespace('hone')
local opts = vim.deepcopy(M.defaults)

local function client_for(bufnr)
  return vim.lsp.get_clients({ name = 'hone', bufnr = bufnr or 0 })[1]
end

function M.dismiss()
  if M.suggestion then
    pcall(vim.api.nvim_buf_clear_namespace, M.suggestion.bufnr, ns, 0, -1)
  end
  M.suggestion = nil
end

local function show(bufnr, item, client_id)
  M.dismiss()
  local text = item.insertText
  if type(text) == 'table' then
    text = text.value -- a snippet string
  end
  if not text or text == '' then
    return
  end
  local lines = vim.split(text, '\n', { plain = true })
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  row = row - 1
  local virt_lines = {}
  for i = 2, #lines do
    table.insert(virt_lines, { { lines[i], 'Comment' } })
  end
  vim.api.nvim_buf_set_extmark(bufnr, ns, row, col, {
    virt_text = { { lines[1], 'Comment' } },
    virt_text_pos = 'inline',
    virt_lines = #virt_lines > 0 and virt_lines or nil,
  })
  M.suggestion = { bufnr = bufnr, item = item, client_id = client_id }
end

-- Ask the server for an inline completion at the cursor and show it. Without `done` it is an
-- automatic request (shown only if still in insert mode and the buffer did not change meanwhile);
-- with `done` an explicit one, and `done(item_or_nil)` gets the answer.
function M.suggest(done)
  local bufnr = vim.api.nvim_get_current_buf()
  local client = client_for(bufnr)
  if not client then
    return done and done(nil)
  end
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = done and 1 or 2 }
  local changedtick = vim.api.nvim_buf_get_changedtick(bufnr)
  client:request('textDocument/inlineCompletion', params, function(err, result)
    local items = (not err and result) and (result.items or result) or {}
    local item = items[1]
    -- drop answers for a buffer that changed meanwhile (a newer request is on its way)
    local current = vim.api.nvim_buf_get_changedtick(bufnr) == changedtick
    if item and current and (done or vim.fn.mode():match('^i')) then
      show(bufnr, item, client.id)
    end
    if done then
      done(item)
    end
  end, bufnr)
end

-- Insert the shown suggestion; returns false when there is none.
function M.accept()
  local s = M.suggestion
  if not s then
    return false
  end
  M.dismiss()
  local client = vim.lsp.get_client_by_id(s.client_id)
  local text = type(s.item.insertText) == 'table' and s.item.insertText.value or s.item.insertText
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  local here = { line = row - 1, character = vim.lsp.util.character_offset(s.bufnr, row - 1, col, client and client.offset_encoding or 'utf-16') }
  local range = s.item.range or { start = here, ['end'] = here }
  vim.lsp.util.apply_text_edits({ { range = range, newText = text } }, s.bufnr, client and client.offset_encoding or 'utf-16')
  local lines = vim.split(text, '\n', { plain = true })
  local end_row = range.start.line + #lines
  local end_col = #lines == 1 and (col + #lines[1]) or #lines[#lines]
  pcall(vim.api.nvim_win_set_cursor, 0, { end_row, end_col })
  return true
end

local function command(name, args, bufnr)
  local client = client_for(bufnr)
  if not client then
    vim.notify('Hone: no server for this buffer', vim.log.levels.WARN)
    return
  end
  client:request('workspace/executeCommand', { command = name, arguments = args }, function(err, result)
    if err then
      vim.notify('Hone: ' .. err.message, vim.log.levels.ERROR)
    elseif result and result.message and result.message ~= '' then
      vim.notify('Hone: ' .. result.message, vim.log.levels.INFO)
    end
  end, bufnr)
end

function M.fill_holes(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  command('hone.fillHoles', { vim.uri_from_bufnr(bufnr) }, bufnr)
end

function M.rewrite(first_line, last_line, bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local last = vim.api.nvim_buf_get_lines(bufnr, last_line - 1, last_line, false)[1] or ''
  local client = client_for(bufnr)
  local enc = client and client.offset_encoding or 'utf-16'
  local range = {
    start = { line = first_line - 1, character = 0 },
    ['end'] = { line = last_line - 1, character = vim.lsp.util.character_offset(bufnr, last_line - 1, #last, enc) },
  }
  command('hone.rewriteSelection', { vim.uri_from_bufnr(bufnr), range }, bufnr)
end

local function start(bufnr)
  local root = vim.fs.root(bufnr, opts.root_markers) or vim.fn.getcwd()
  local id = vim.lsp.start({
    name = 'hone',
    cmd = opts.cmd,
    root_dir = root,
    init_options = opts.settings,
    settings = { hone = opts.settings },
    handlers = {
      ['hone/status'] = function(_, result)
        M.status = result or M.status
      end,
    },
  }, { bufnr = bufnr })
  if id and vim.lsp.inline_completion then -- Neovim 0.12+: native ghost text
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
  end
  return id
end

local function map_keys(bufnr)
  local k = opts.keymaps
  if not k then
    return
  end
  if k.suggest then
    vim.keymap.set('i', k.suggest, function() M.suggest() end, { buffer = bufnr, desc = 'Hone: suggest' })
  end
  if k.accept then
    vim.keymap.set('i', k.accept, function()
      if not M.accept() then
        return vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(k.accept, true, false, true), 'n', false)
      end
    end, { buffer = bufnr, desc = 'Hone: accept the suggestion' })
  end
  if k.dismiss then
    vim.keymap.set('i', k.dismiss, M.dismiss, { buffer = bufnr, desc = 'Hone: dismiss the suggestion' })
  end
end

function M.setup(user)
  opts = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), user or {})
  local group = vim.api.nvim_create_augroup('hone', { clear = true })
  vim.api.nvim_create_autocmd('FileType', {
    group = group,
    pattern = opts.filetypes,
    callback = function(ev)
      start(ev.buf)
      map_keys(ev.buf)
    end,
  })
  if opts.auto and not vim.lsp.inline_completion then
    vim.api.nvim_create_autocmd('TextChangedI', {
      group = group,
      callback = function(ev)
        if client_for(ev.buf) then
          M.dismiss()
          M.suggest()
        end
      end,
    })
  end
  vim.api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, { group = group, callback = M.dismiss })
  -- where the cursor is placed (moved in normal mode, insert mode entered, buffer shown): the server computes the
  -- completion there before the first keystroke (hone/cursor)
  vim.api.nvim_create_autocmd({ 'CursorMoved', 'InsertEnter', 'BufEnter' }, {
    group = group,
    callback = function(ev)
      local client = client_for(ev.buf)
      if client and ev.buf == vim.api.nvim_get_current_buf() then
        client:notify('hone/cursor', vim.lsp.util.make_position_params(0, client.offset_encoding))
      end
    end,
  })
  vim.api.nvim_create_user_command('HoneFillHoles', function() M.fill_holes() end, { desc = 'Hone: fill every ??? hole' })
  vim.api.nvim_create_user_command('HoneRewrite', function(c) M.rewrite(c.line1, c.line2) end,
    { range = true, desc = 'Hone: rewrite the selected lines' })
  vim.api.nvim_create_user_command('HoneStatus', function()
    print(('Hone: %s %s %s %s'):format(M.status.state or '?', M.status.model or '', M.status.device or '',
      M.status.message or ''))
  end, { desc = 'Hone: server status' })
  -- buffers opened before setup
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(buf) and vim.tbl_contains(opts.filetypes, vim.bo[buf].filetype) then
      start(buf)
      map_keys(buf)
    end
  end
end

return M
