// A manager, an ops engineer and a designer in a real browser, on a server api/tests/e2e.rs
// prepared: an assembly approval whose SLA is breached, a faulted instance, a deployed
// definition. BATON_OPS_TOKEN and BATON_DESIGNER_TOKEN sign the last two in.
import assert from 'node:assert/strict';
import { artifacts, launch, shot, signIn } from './browser.mjs';

const browser = await launch();
try {
  // The manager sees the breach in her department and reassigns the task.
  const manager = await signIn(browser, { subject: 'mia' });
  await manager.getByRole('link', { name: 'Escalations' }).click();
  await manager.getByRole('heading', { name: 'Escalations: assembly' }).waitFor();
  assert.equal(await manager.locator('.badge.overdue').count(), 1, "one breach, her department's");
  await shot(manager, 'manager-1-escalations');
  await manager.getByRole('link', { name: 'review' }).click();
  await manager.getByLabel('New owner (person id)').fill('pat');
  await manager.getByRole('button', { name: 'Reassign' }).click();
  await manager.locator('dd', { hasText: 'pat' }).first().waitFor();
  await shot(manager, 'manager-2-reassigned');

  // The ops engineer finds the faulted instance and retries it with a reason.
  const ops = await signIn(browser, { token: process.env.BATON_OPS_TOKEN });
  await ops.getByRole('link', { name: 'Instances' }).click();
  await ops.getByLabel('Status').selectOption('faulted');
  await ops.getByRole('button', { name: 'Search' }).click();
  await ops.locator('a[href^="/ui/instances/"]').first().click();
  await ops.getByRole('heading', { name: 'Incidents' }).waitFor();
  await shot(ops, 'ops-1-incident');
  await ops.getByLabel('Reason (kept in the history)').first().fill('printer fixed');
  await ops.getByRole('button', { name: 'Retry' }).first().click();
  await ops.getByText(/is being retried/).waitFor();
  await ops.getByText('IncidentResolved').first().waitFor();
  await shot(ops, 'ops-2-retried');

  // The designer edits a definition's text and sees the error at its line.
  const designer = await signIn(browser, { token: process.env.BATON_DESIGNER_TOKEN });
  await designer.getByRole('link', { name: 'Definitions' }).click();
  await designer.getByRole('link', { name: 'training/approval' }).first().click();
  await designer.getByRole('img', { name: "The definition's tasks and their flow" }).waitFor();
  const text = await designer.getByLabel('YAML').inputValue();
  await designer.getByLabel('YAML').fill(text.replace("version: '1.0.0'", "version: '1.0.0'\n  metadata:\n    baton:\n      onError: maybe"));
  await designer.getByRole('button', { name: 'Validate' }).click();
  const bad = designer.locator('li.bad');
  await bad.first().waitFor();
  assert.match(await bad.first().innerText(), /line 8, column 16: BATON-L009/);
  await shot(designer, 'designer-1-error-at-its-line');
  console.log(`manager, ops, designer: breach seen and reassigned, incident retried, error at its line; screenshots in ${artifacts}`);
} finally {
  await browser.close();
}
