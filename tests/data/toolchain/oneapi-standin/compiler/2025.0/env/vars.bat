@echo off
rem Stand-in for the compiler component's env\vars.bat: the variables it sets (see ../../../../README.md).
set "CMPLR_ROOT=%ONEAPI_ROOT%compiler\2025.0"
set "PATH=%ONEAPI_ROOT%compiler\2025.0\bin;%PATH%"
set "OCL_ICD_FILENAMES=%ONEAPI_ROOT%compiler\2025.0\bin\intelocl64.dll"
set "WEIRD_VALUE=a=b=c"
if defined IPEX_AOT_STANDIN_FAIL (
  echo ERROR: cannot find the compiler's runtime 1>&2
  exit /b 2
)
exit /b 0
