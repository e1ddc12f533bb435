// An ops engineer suspends every instance of a search in a real browser: the search, the
// count of a dry run, the confirmation, then the job's page followed to its end.
// Run by api/tests/e2e.rs against a server it started: BATON_BASE is the server's address,
// BATON_CHROMIUM the browser, BATON_E2E_ARTIFACTS where the screenshots go, BATON_OPS_TOKEN
// the ops engineer's token.
import assert from 'node:assert/strict';
import { base, launch, shot, signIn } from './browser.mjs';

const browser = await launch();
try {
  const page = await signIn(browser, { token: process.env.BATON_OPS_TOKEN });
  await page.goto(`${base}/ui/instances?definition=training%2Fapproval`);
  await page.getByLabel('Action', { exact: true }).selectOption('suspend');
  await page.getByLabel("Reason (kept in each instance's history)").fill('stock count');
  await page.getByRole('button', { name: 'Count the instances' }).click();

  const matched = page.locator('#matched');
  await matched.waitFor();
  assert.equal(await matched.innerText(), '2', 'the dry run counts the two approvals');
  await shot(page, 'ops-bulk-1-counted');
  await page.getByRole('button', { name: 'Confirm: suspend them' }).click();

  await page.waitForURL(/\/ui\/bulk\/[^/]+$/);
  await page.getByText('Finished: 2 done, 0 failed, of 2.').waitFor();
  assert.equal(await page.locator('#bulk-progress[hx-get]').count(), 0, 'a finished job is not polled');
  await shot(page, 'ops-bulk-2-finished');
} finally {
  await browser.close();
}
