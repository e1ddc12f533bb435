// A team leader in a real browser: signs in through the development login, sees only their
// department's task, gets the form's message beside the field, claims and completes the task.
// Run by api/tests/e2e.rs against a server it started: BATON_BASE is the server's address,
// BATON_CHROMIUM the browser, BATON_E2E_ARTIFACTS where the screenshots go.
import assert from 'node:assert/strict';
import { artifacts, base, launch, shot } from './browser.mjs';

const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(`${base}/ui/inbox`);
  assert.match(page.url(), /\/ui\/login$/, 'without a session the inbox sends one to the login page');
  await page.getByLabel('Person or account').selectOption('tom');
  await shot(page, 'team-leader-1-login');
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForURL(/\/ui\/inbox$/);

  await page.getByRole('link', { name: 'Approve Forklift' }).waitFor();
  assert.equal(await page.getByText('Approve Spray booth').count(), 0, "another department's task is not shown");
  await shot(page, 'team-leader-2-inbox');

  await page.getByRole('link', { name: 'Approve Forklift' }).click();
  await page.getByRole('heading', { name: 'Approve Forklift' }).waitFor();
  const comment = page.getByRole('textbox', { name: 'comment', exact: true });
  await comment.fill('ok');
  await page.getByRole('button', { name: 'approve' }).click();
  const error = page.locator('#e-comment');
  await error.waitFor();
  assert.match(await error.innerText(), /shorter than 3/);
  assert.equal(await comment.inputValue(), 'ok', 'what was typed is kept');
  await shot(page, 'team-leader-3-form-error');

  await page.getByRole('button', { name: 'Claim this task' }).click();
  await page.getByRole('textbox', { name: 'comment', exact: true }).fill('Looks right');
  await page.getByRole('button', { name: 'approve' }).click();
  await page.getByText('approve by tom').waitFor();
  await shot(page, 'team-leader-4-completed');

  await page.getByRole('link', { name: 'Inbox' }).first().click();
  await page.getByText('Nothing to do').waitFor();
  console.log(`team leader: signed in, saw only assembly, form error inline, completed; screenshots in ${artifacts}`);
} finally {
  await browser.close();
}
