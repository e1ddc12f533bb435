// What the scenarios share: Debian's Chromium launched by Playwright, and screenshots.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

export const base = process.env.BATON_BASE;
const artifacts = process.env.BATON_E2E_ARTIFACTS;
mkdirSync(artifacts, { recursive: true });

export async function launch() {
  const root = process.getuid && process.getuid() === 0;
  return chromium.launch({
    executablePath: process.env.BATON_CHROMIUM,
    args: [
      ...(root ? ['--no-sandbox'] : []),
      '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync',
    ],
  });
}

export const shot = (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });

/// Signs in on a fresh page: as a person of the directory (development login), or with a token.
export async function signIn(browser, { subject, token }) {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${base}/ui/login`);
  if (token) {
    await page.getByRole('textbox', { name: 'Token' }).fill(token);
    await page.getByRole('button', { name: 'Sign in with the token' }).click();
  } else {
    await page.getByLabel('Person or account').selectOption(subject);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  }
  await page.waitForURL(/\/ui\/inbox$/);
  return page;
}

export { artifacts };
