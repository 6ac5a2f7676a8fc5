// accelerate/checkpoint.h: the former name of model_files.h (model weights on disk), kept so
// that programs including it still build; new code includes <accelerate/model_files.h>.
#pragma once

#include "accelerate/model_files.h"
