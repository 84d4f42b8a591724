/**
 * Browser test of the plugin: headless Chromium (the system's, driven by playwright-core) opens the
 * harness task page, clicks Actions -> Train DETR, starts training, closes and reopens the dialog
 * while the job runs, and waits for the job to succeed with its loss and mAP curves; opens the
 * Models tab, sees the sample predictions image, and (with --publish) unpublishes and publishes the
 * version again; then it checks the older <Menu.Item> contract. Screenshots go to
 * $DETR_UI_ARTIFACTS (default e2e/artifacts/): train-detr.png shows the finished job and its curves,
 * model-view.png the Models tab. Exits 0 on success, 1 with the reason (and failure.png) otherwise.
 *
 *   node e2e/run.mjs --base-url http://127.0.0.1:8765/detr/api [--task 42] [--epochs 3]
 *                    [--cookie sessionid=...] [--cookie csrftoken=...] [--timeout-s 180] [--no-build]
 *                    [--publish]
 *
 * `--base-url` is the gateway's API root; the page reaches it same-origin through e2e/server.mjs.
 * `--cookie` sets the CVAT session the browser holds (default: made-up sessionid and csrftoken).
 * `--publish`: the trainer can publish (a Nuclio dashboard), so the Models tab's buttons are tried.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';
import { build } from 'vite';

import { startHarnessServer } from './server.mjs';

const UI_DIR = fileURLToPath(new URL('..', import.meta.url));
// Flags known to work as root on a machine without outside network (no sandbox, no background calls).
const CHROMIUM_ARGS = [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
];

function parseOptions() {
    const { values } = parseArgs({
        options: {
            'base-url': { type: 'string' },
            task: { type: 'string', default: '42' },
            epochs: { type: 'string', default: '3' },
            cookie: { type: 'string', multiple: true, default: [] },
            'timeout-s': { type: 'string', default: '180' },
            'no-build': { type: 'boolean', default: false },
            publish: { type: 'boolean', default: false },
            chromium: { type: 'string', default: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium' },
        },
    });
    if (!values['base-url']) {
        throw new Error('--base-url is required: the gateway API root, e.g. http://127.0.0.1:8765/detr/api');
    }
    const cookies = {
        sessionid: `e2e-${randomBytes(8).toString('hex')}`,
        csrftoken: randomBytes(16).toString('hex'),
    };
    for (const pair of values.cookie) {
        const at = pair.indexOf('=');
        if (at < 1) throw new Error(`--cookie ${JSON.stringify(pair)}: expected name=value`);
        cookies[pair.slice(0, at)] = pair.slice(at + 1);
    }
    return {
        apiBase: values['base-url'],
        task: Number(values.task),
        epochs: values.epochs,
        cookies,
        timeoutMs: Number(values['timeout-s']) * 1000,
        build: !values['no-build'],
        publish: values.publish,
        chromium: values.chromium,
        artifacts: path.resolve(process.env.DETR_UI_ARTIFACTS ?? path.join(UI_DIR, 'e2e', 'artifacts')),
    };
}

const log = (message) => console.log(`e2e: ${message}`);

async function openTrainDetr(page) {
    await page.getByRole('button', { name: 'Actions' }).click();
    await page.getByRole('menuitem', { name: 'Train DETR' }).click();
}

/** The task's newest job, asked of the gateway directly with the same session. */
async function newestJob(options) {
    const cookie = Object.entries(options.cookies).map(([name, value]) => `${name}=${value}`).join('; ');
    const answer = await fetch(`${options.apiBase.replace(/\/$/, '')}/jobs?task=${options.task}`, { headers: { cookie } });
    if (!answer.ok) throw new Error(`GET /jobs?task=${options.task} answered ${answer.status}: ${await answer.text()}`);
    return (await answer.json()).jobs[0] ?? null;
}

async function trainThroughTheDialog(page, origin, options, shot) {
    await page.goto(`${origin}/?task=${options.task}`);
    await page.getByRole('button', { name: 'Actions' }).click();
    await page.getByRole('menuitem', { name: 'Train DETR' }).waitFor();
    await shot('train-detr-menu.png');
    await page.getByRole('menuitem', { name: 'Train DETR' }).click();

    const epochs = page.getByLabel('Epochs');
    await epochs.waitFor();
    await epochs.fill(options.epochs);
    await shot('train-detr-form.png');
    await page.getByRole('button', { name: 'Start training' }).click();
    log('started training');

    const running = page.getByText(/^Epoch \d+ of \d+/);
    const finished = page.getByText(/^Training (finished|failed|cancelled|interrupted)$/);
    const refused = page.locator('.ant-modal .ant-alert-error');
    await running.or(finished).or(refused).first().waitFor({ timeout: options.timeoutMs });
    if (await refused.isVisible()) throw new Error(`starting failed: ${await refused.innerText()}`);
    if (await running.isVisible()) {
        const chart = page.locator('.detr-metrics-chart svg');
        log(`curves while running: ${await chart.count() ? await chart.getAttribute('data-epochs') : 0} epoch(s)`);
        await shot('train-detr-progress.png');
        // Close while training, reopen: the dialog must find the running job again.
        await page.getByRole('dialog').getByRole('button', { name: 'Close' }).first().click();
        await page.getByRole('dialog').waitFor({ state: 'hidden' });
        await openTrainDetr(page);
        const lastRun = page.getByText(/^Last run /);
        await running.or(finished).or(lastRun).first().waitFor({ timeout: options.timeoutMs });
        log(await lastRun.isVisible() ? 'reopened after the job ended' : 'reopened and resumed following the job');
    }
    await finished.or(page.getByText(/^Last run /)).first().waitFor({ timeout: options.timeoutMs });
    const outcome = await page.getByRole('dialog').innerText();
    if (!/Training finished|Last run succeeded/.test(outcome)) throw new Error(`the job did not succeed:\n${outcome}`);
    if (await finished.isVisible()) {
        await page.locator(`.detr-metrics-chart svg[data-epochs="${options.epochs}"]`).waitFor();
        log(`curves of the finished run: ${options.epochs} epochs`);
    }
    await shot('train-detr.png');
}

/** The Models tab: the version, its sample predictions image (loaded through the gateway), publishing. */
async function checkModelView(page, options, shot) {
    await page.getByRole('tab', { name: 'Models' }).click();
    await page.getByText(/^v1: mAP /).waitFor({ timeout: options.timeoutMs });
    const samples = page.locator('.detr-model-details img[alt="Sample predictions of v1"]');
    await samples.waitFor();
    await page.waitForFunction((img) => img.complete && img.naturalWidth > 0, await samples.elementHandle(),
        { timeout: options.timeoutMs });
    log(`model view: samples image loaded (${await samples.evaluate((img) => img.naturalWidth)} px wide)`);
    if (options.publish) {
        const details = page.locator('.detr-models-view');
        await details.getByRole('button', { name: 'Unpublish' }).click();
        await page.locator('.ant-popconfirm').getByRole('button', { name: 'Unpublish' }).click();
        await details.getByRole('button', { name: 'Publish', exact: true }).waitFor({ timeout: options.timeoutMs });
        log('model view: unpublished');
        await details.getByRole('button', { name: 'Publish', exact: true }).click();
        await details.getByRole('button', { name: 'Unpublish' }).waitFor({ timeout: options.timeoutMs });
        log('model view: published again');
    }
    await shot('model-view.png');
}

async function checkOlderMenuContract(page, origin, options, shot) {
    await page.goto(`${origin}/?task=${options.task}&contract=menu-item`);
    await page.getByRole('button', { name: 'Actions' }).click();
    await page.getByRole('menuitem', { name: 'Train DETR' }).waitFor();
    await shot('train-detr-legacy-menu.png');
    await page.getByRole('menuitem', { name: 'Train DETR' }).click();
    await page.getByText(/^Last run succeeded/).waitFor({ timeout: options.timeoutMs });
}

async function main() {
    const options = parseOptions();
    await mkdir(options.artifacts, { recursive: true });
    await rm(path.join(options.artifacts, 'failure.png'), { force: true });
    if (options.build) {
        log('building the harness');
        await build({ configFile: path.join(UI_DIR, 'e2e', 'vite.config.ts'), logLevel: 'warn' });
    }
    const server = await startHarnessServer({ apiBase: options.apiBase });
    const browser = await chromium.launch({ executablePath: options.chromium, headless: true, args: CHROMIUM_ARGS });
    const shots = [];
    let page;
    try {
        const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
        await context.addCookies(Object.entries(options.cookies).map(([name, value]) => ({
            name, value, url: server.url, httpOnly: name === 'sessionid', sameSite: 'Lax',
        })));
        page = await context.newPage();
        const pageErrors = [];
        page.on('pageerror', (error) => pageErrors.push(error.message));
        const csrfHeaders = [];
        page.on('request', (request) => {
            if (request.method() === 'POST' && request.url().includes('/detr/api/')) {
                csrfHeaders.push(request.headers()['x-csrftoken'] ?? null);
            }
        });
        const shot = async (name) => {
            const file = path.join(options.artifacts, name);
            await page.screenshot({ path: file, animations: 'disabled' });
            shots.push(file);
        };

        await trainThroughTheDialog(page, server.url, options, shot);
        await checkModelView(page, options, shot);
        const job = await newestJob(options);
        if (job?.state !== 'succeeded') throw new Error(`the gateway reports the newest job as ${JSON.stringify(job)}`);
        log(`job ${job.id} succeeded; published as ${job.function}`);
        await checkOlderMenuContract(page, server.url, options, shot);

        if (csrfHeaders.length === 0 || csrfHeaders.some((value) => value !== options.cookies.csrftoken)) {
            throw new Error(`POSTs must carry X-CSRFToken = the csrftoken cookie; saw ${JSON.stringify(csrfHeaders)}`);
        }
        if (pageErrors.length) throw new Error(`the page raised errors: ${pageErrors.join('; ')}`);
        console.log(JSON.stringify({ job: { id: job.id, state: job.state, function: job.function }, screenshots: shots }));
    } catch (error) {
        if (page) await page.screenshot({ path: path.join(options.artifacts, 'failure.png') }).catch(() => undefined);
        throw error;
    } finally {
        await browser.close();
        await server.close();
    }
}

main().catch((error) => {
    console.error(`e2e: FAILED: ${error.message}`);
    process.exit(1);
});
