/**
 * CVAT UI plugin entry (built into CVAT's UI through CLIENT_PLUGINS): adds "Train DETR" to the task
 * Actions menu when CVAT fires `plugins.ready`.
 */
import { ComponentBuilder, CvatUI } from './cvat-types';
import { unmountTrainDialog } from './dialog-root';
import { shouldRenderTrainDetr, TrainDetrItem } from './menu-item';

export const PLUGIN_NAME = 'Train DETR';
export const TASK_ACTIONS_PATH = 'taskActions.items';
/** Right after "Automatic annotation" (weight 30) in every CVAT layout. */
export const MENU_WEIGHT = 35;

export const trainDetrBuilder: ComponentBuilder = ({ dispatch, REGISTER_ACTION, REMOVE_ACTION }) => {
    const payload = {
        path: TASK_ACTIONS_PATH,
        component: TrainDetrItem,
        data: { weight: MENU_WEIGHT, shouldBeRendered: shouldRenderTrainDetr },
    };
    let registered = false;
    try {
        dispatch({ type: REGISTER_ACTION, payload });
        registered = true;
    } catch (error) {
        // CVAT's reducer throws for a path this version lacks; the rest of the UI must keep working.
        console.warn(`${PLUGIN_NAME}: this CVAT version has no '${TASK_ACTIONS_PATH}' plugin point`, error);
    }
    return {
        name: PLUGIN_NAME,
        destructor: () => {
            if (registered) dispatch({ type: REMOVE_ACTION, payload: { path: TASK_ACTIONS_PATH, component: TrainDetrItem } });
            unmountTrainDialog();
        },
    };
};

export function registerTrainDetr(): void {
    const cvatUI = (window as Window & { cvatUI?: CvatUI }).cvatUI;
    if (cvatUI) {
        cvatUI.registerComponent(trainDetrBuilder);
    } else {
        console.warn(`${PLUGIN_NAME}: window.cvatUI is missing; is this CVAT 2.14.1 or newer?`);
    }
}

window.addEventListener('plugins.ready', registerTrainDetr, { once: true });
