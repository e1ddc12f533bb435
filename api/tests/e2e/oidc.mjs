// A team leader signs in through the organisation's OpenID provider in a real browser: Baton's
// login page, the provider's own sign-in page (another site), back to Baton's inbox with a
// session; signing out ends it. Run by api/tests/e2e.rs against a server and a provider it
// started: BATON_BASE is the server's address, BATON_CHROMIUM the browser,
// BATON_E2E_ARTIFACTS where the screenshots go.
import assert from 'node:assert/strict';
import { base, launch, shot } from './browser.mjs';

const browser = await launch();
try {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${base}/ui/inbox`);
  assert.match(page.url(), /\/ui\/login$/, 'without a session the inbox sends one to the login page');
  await page.getByRole('link', { name: 'Sign in with Test ID' }).click();

  // The provider's page, on its own site.
  const sub = page.getByPlaceholder('sub');
  await sub.waitFor();
  assert.notEqual(new URL(page.url()).hostname, new URL(base).hostname, 'the provider is another site');
  await sub.fill('tom');
  await shot(page, 'oidc-1-provider');
  await page.getByRole('button', { name: 'Authorize' }).click();

  // Back at Baton, signed in: the strict session cookie reaches the inbox.
  await page.waitForURL(/\/ui\/inbox$/);
  await page.getByText('Signed in as').waitFor();
  assert.equal(await page.locator('.who strong').innerText(), 'tom');
  await page.getByRole('link', { name: 'Approve Forklift' }).waitFor();
  await shot(page, 'oidc-2-inbox');

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(/\/ui\/login$/);
  await page.goto(`${base}/ui/inbox`);
  assert.match(page.url(), /\/ui\/login$/, 'signed out, the inbox asks to sign in again');
} finally {
  await browser.close();
}
